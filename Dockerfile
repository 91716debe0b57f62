# Portolan: one image for the operator (`portolan operator`), the shard pods (`portolan shard`)
# and local scans (`portolan scan`). Debian 12 slim with Debian's python3 (3.11) in both stages,
# so the venv built in the first stage runs unchanged in the second. Multi-stage: the build stage
# makes a venv from the pinned requirements.lock; the final stage has no compiler, no pip cache,
# only python3 and libpcap (capture loads it through ctypes), and runs as uid 65532.
FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
# Behind a TLS-intercepting proxy, pass its CA bundle with a build-time mount and
# --build-arg PIP_CERT=<path in the mount>; it stays out of every layer.
ARG PIP_CERT
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY operator ./operator
COPY tools/image-install.sh /usr/local/bin/image-install
RUN image-install /opt/portolan /src

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libpcap0.8 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log \
 && useradd --uid 65532 --user-group --no-create-home --shell /usr/sbin/nologin portolan \
 && mkdir -p /var/run/portolan/capture
# /var/run/portolan/capture: where a shard pod of a capture job mounts its evidence claim; made
# here so that a read-only root file system needs no runtime to create the mount point.
COPY --from=build /opt/portolan /opt/portolan
ENV PATH=/opt/portolan/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["portolan"]
CMD ["scan", "--help"]
