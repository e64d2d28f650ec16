#!/bin/sh
# Entry point an agent runs after pulling the project.
exec python3 "$(dirname "$0")/flows/etl/daily.py"
