"""The federation's logic without Flower: client rounds, decoding and aggregation, privacy plan, results.

``clients/`` and ``server/`` wrap these in Flower's ClientApp and ServerApp; everything here works on plain
arrays, bytes and ``RunConfig``, so it is tested without Flower and usable from other frameworks.
"""
