# syntax=docker/dockerfile:1
# a comment after the directive block

ARG BASE=busybox
ARG TAG
FROM --platform=$BUILDPLATFORM ${BASE}:${TAG:-latest} AS Build
MAINTAINER someone <a@b.c>
RUN echo hello \
  # a comment inside a continuation

    world
RUN ["/bin/echo", "exec form"]
RUN --network=none wget -q http://example.invalid/ || true
copy --chown=app:app --chmod=0644 src/*.txt "with space.txt" /dst/
ADD --chown=1:2 archive.tar.gz /opt/
ENV A=1 B="two words" C=$A
ENV OLD some value here
LABEL "com.example.vendor"="ACME" version=1.0 description='a "quoted" label'
ARG VERSION=1 OTHER
WORKDIR /app
USER 1000:1000
EXPOSE 80 53/udp 8000-8002/tcp
VOLUME ["/data", "/logs"]
VOLUME /cache
SHELL ["/bin/sh", "-ec"]
CMD ["serve", "--port", "80"]
ENTRYPOINT /entry.sh
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --timeout=2s --start-period=1m30s --retries=4 CMD wget -q -O- localhost || exit 1
HEALTHCHECK NONE
ONBUILD COPY . /onbuild

FROM scratch
COPY --from=build /app/bin /bin/
CMD echo shell form
