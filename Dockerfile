# Passerelle API image. Build and run with its database: `docker compose up --build`.
#
# The project is installed as a plain (non-editable) package: the migration scripts ship
# inside it (campaigns/migrations), so `passerelle db upgrade` needs no source checkout.
# Exact base image version (a moving tag would change the image under the same Dockerfile).
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PASSERELLE_DATA_DIR=/data

WORKDIR /app

# Dependencies in their own layer, rebuilt only when pyproject.toml changes. Every
# dependency ships manylinux wheels (psycopg[binary] bundles libpq), so no compiler;
# cairosvg (SVG logos in QR artwork) loads the system's libcairo.
COPY pyproject.toml ./
RUN apt-get update && apt-get install -y --no-install-recommends libcairo2 \
    && rm -rf /var/lib/apt/lists/*
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The application, installed into site-packages (root-owned, read-only for the service
# user); the build context is deleted afterwards. Only /data is writable (scan spool and
# tag snapshot: mount a volume there so spooled scans survive restarts).
COPY . /tmp/src
RUN pip install --no-cache-dir --no-deps /tmp/src \
    && rm -rf /tmp/src \
    && groupadd --system --gid 10001 passerelle \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin passerelle \
    && mkdir -p /data \
    && chown 10001:10001 /data

USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000

# Ready = tag cache loaded from the database and the database reachable (503 otherwise,
# which urlopen raises on).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=2)"]

# Migrate first and stop if that fails (`serve` alone would only warn), then serve.
# Behind a reverse proxy add --forwarded-allow-ips=<proxy address> so client IPs are right.
CMD ["sh", "-c", "passerelle db upgrade && exec passerelle serve --host 0.0.0.0 --port 8000 --no-migrate"]
