# One image for every app process (web, worker, scheduler, consumer, migrate);
# docker-compose.yml picks the process with `command:`.
FROM python:3.11-slim

# HOST: in a container gunicorn must listen on all interfaces (Settings defaults to 127.0.0.1).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 \
    PORT=8080

WORKDIR /app

# Dependencies first, so a code change does not reinstall them.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

# Only the runtime packages are copied (not .venv/, .git/, tests/, bench/), so the
# image stays small even without a .dockerignore. The code stays root-owned and
# read-only for the app user; var/ is the one writable directory (the SQLite default
# path, unused when DATABASE_URL points at MySQL).
COPY config/ config/
COPY models/ models/
COPY migrations/ migrations/
COPY web/ web/
COPY workers/ workers/
COPY scheduler/ scheduler/

RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin app \
    && mkdir -p /app/var \
    && chown app:app /app/var
USER app

EXPOSE 8080

# Liveness only (/healthz = process up). docker-compose.yml overrides this per service:
# web probes /readyz, the non-HTTP processes use a process check.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/api/v1/healthz', timeout=4)"]

CMD ["gunicorn", "-c", "config/gunicorn.py", "web:create_app()"]
