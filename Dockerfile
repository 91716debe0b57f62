# Portolan: one image for the operator (`portolan operator`), the shard pods (`portolan shard`)
# and local scans (`portolan scan`). Multi-stage: the build stage makes a venv from the pinned
# requirements.lock; the final stage is slim Python with that venv, running as a non-root user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY operator ./operator
COPY tools/image-install.sh /usr/local/bin/image-install
RUN image-install /opt/portolan /src

FROM python:3.11-slim
RUN useradd --uid 65532 --user-group --no-create-home --shell /usr/sbin/nologin portolan
COPY --from=build /opt/portolan /opt/portolan
ENV PATH=/opt/portolan/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["portolan"]
CMD ["scan", "--help"]
