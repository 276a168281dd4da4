ARG ALPINE
FROM ${ALPINE}
RUN apk add --no-cache ca-certificates
