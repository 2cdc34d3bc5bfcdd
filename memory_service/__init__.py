"""Faraday memory service: memory recall over gRPC for the Faraday teaching platform."""
