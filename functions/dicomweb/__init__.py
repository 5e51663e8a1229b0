"""The DICOMweb API on AWS: a Chalice app (API Gateway REST) over the shared route table."""
