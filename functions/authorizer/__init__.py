"""The DICOMweb API authorizer Lambda (OIDC/JWT)."""
