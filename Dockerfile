# tokn-router as a team server: the API on 4141, the MITM proxy on 4142.
#
#   docker build -t tokn-router .
#   docker volume create tokn-router
#   docker run --rm -it -v tokn-router:/data tokn-router login        # add an account
#   docker run --rm -v tokn-router:/data tokn-router keys create alice
#   docker run -d --name tokn-router -p 4141:4141 -p 4142:4142 -v tokn-router:/data tokn-router
#
# Everything the router keeps (config.toml, keys, usage.db, the proxy CA) lives in
# the /data volume. A non-loopback bind requires client keys unless the config
# says [server] auth = "none".
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the wheel is built from, so edits to tests or docs keep this layer cached.
COPY pyproject.toml README.md VERSION LICENSE-MIT LICENSE-APACHE /build/
COPY src /build/src
RUN pip install /build && rm -rf /build

# A fixed, unprivileged user; /data is its own and private, like the state dir.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/tokn tokn \
    && mkdir -p /data \
    && chown tokn:tokn /data \
    && chmod 0700 /data

ENV HOME=/home/tokn \
    TOKN_ROUTER_CONFIG=/data/config.toml
VOLUME ["/data"]
USER tokn
WORKDIR /home/tokn

EXPOSE 4141 4142

# No curl in the slim image: ask /healthz with the standard library, bypassing any
# HTTP_PROXY given to the container for the upstream calls.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:4141/healthz', timeout=4)"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["tokn-router"]
CMD ["serve", "--host", "0.0.0.0", "--with-proxy"]
