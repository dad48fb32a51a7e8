# fsbridge image: build the package with its pinned dependencies, then run it as a non-root user.
# The install command is the README's: pip install --constraint requirements.lock .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
COPY src ./src
RUN python -m venv /opt/fsbridge \
 && /opt/fsbridge/bin/pip install --no-cache-dir --constraint requirements.lock .

FROM python:3.11-slim
RUN groupadd --system --gid 10001 fsbridge \
 && useradd --system --no-log-init --uid 10001 --gid 10001 --home-dir /app fsbridge \
 && mkdir -p /app/var /app/config \
 && chown 10001:10001 /app/var
COPY --from=build /opt/fsbridge /opt/fsbridge
COPY config /app/config
WORKDIR /app
USER 10001:10001
ENV PATH=/opt/fsbridge/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    FSBRIDGE_HOST=0.0.0.0 \
    FSBRIDGE_PORT=8000 \
    FSBRIDGE_LOG_FORMAT=json
EXPOSE 8000
VOLUME ["/app/var"]
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["fsbridge"]
CMD ["serve"]
