"""POSTD platform sandbox: one aiohttp app speaking each platform's wire format.

Entry points: `postd_sandbox.app.create_app(settings)`, `postd_sandbox.config.load_settings`,
`python -m postd_sandbox`; signing helpers for verifier tests in `postd_sandbox.signing`.
"""
