"""Test support for systems built on the toolkit: fakes, isolated infrastructure, an OTLP
receiver, TLS material, waiting for a condition. Import the module you need; none is imported
by the package itself."""

__all__ = ["fakes", "infra", "otlp", "tls", "waiting"]
