"""Shared test harnesses: settings and helpers (env, helpers), process and broker harnesses
(procs, kafka_broker, redis_server, api_client). Test modules and bench/ import from here,
never from each other."""
