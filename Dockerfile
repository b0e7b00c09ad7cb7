# msc — the switch in a container. Build: docker build -t msc .
# Run:  docker run -v msc-var:/var/lib/msc -p 7400:7400 -p 9400:9400 msc
# The config and data live in the volume: /var/lib/msc/msc.toml (create it with
# `docker run --rm -v msc-var:/var/lib/msc msc demo --init-only --dir /var/lib/msc`, or mount your own),
# data_dir and the journal under it. Inside a container, bind listeners and [metrics] to 0.0.0.0
# for -p to reach them; the HEALTHCHECK asks /healthz on the container's own loopback either way.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN groupadd --system msc && useradd --system --gid msc --home-dir /var/lib/msc --shell /usr/sbin/nologin msc \
    && mkdir -p /var/lib/msc && chown msc:msc /var/lib/msc && chmod 0700 /var/lib/msc

WORKDIR /opt/msc
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . && rm -rf /root/.cache

USER msc
VOLUME ["/var/lib/msc"]
EXPOSE 7400 9400
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9400/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["msc"]
CMD ["serve", "--config", "/var/lib/msc/msc.toml"]
