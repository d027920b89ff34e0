"""The web view at /ui/: repositories, tags, manifests and the referrer graph."""
