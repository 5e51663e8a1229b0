"""The OpenSearch setup custom resource: indices and fine-grained access control role mappings."""
