"""The webhook router's domain: verification, normalisation, ingest, outbound delivery.

Nothing here imports grpc, asyncpg, confluent_kafka or aiohttp: adapters do.
"""
