//! cairn-layers owns bytes at rest and in transit: layer tars, the blob store, OCI layouts, archives, registries. Filled in by the layers issue.
