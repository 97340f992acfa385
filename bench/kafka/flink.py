"""Runs a file of Flink SQL statements (DDL, then one INSERT) with PyFlink
in streaming mode, and waits for the job to end (its sources are bounded).

    python flink.py CONNECTOR_JAR PARALLELISM FILE.sql
"""
import sys

from pyflink.table import EnvironmentSettings, TableEnvironment

jar, parallelism, path = sys.argv[1], sys.argv[2], sys.argv[3]
env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
config = env.get_config()
config.set("pipeline.jars", "file://" + jar)
config.set("parallelism.default", parallelism)
config.set("execution.checkpointing.interval", "10 s")
config.set("restart-strategy.type", "none")
statements = [s.strip() for s in open(path).read().split(";") if s.strip()]
for statement in statements[:-1]:
    env.execute_sql(statement)
env.execute_sql(statements[-1]).wait()
