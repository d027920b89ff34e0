"""oci-ref: a conformance-focused reference implementation of the OCI Distribution Spec."""

__version__ = '0.1.0'
