"""Model families of hfssl; `hfssl.models.registry` registers them with the Auto classes."""
