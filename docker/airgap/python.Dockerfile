# Air-gapped Python images laid out like the official python:3.x images (the interpreter on PATH as python3.x), from
# the locally bootstrapped Debian base and Debian's packages only. Built by `make images AIRGAP=1`.
ARG DEBIAN_IMAGE=credit-risk/debian:bookworm

# Python 3.11: Debian bookworm's own.
FROM ${DEBIAN_IMAGE} AS python311
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv python-is-python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -c "import bz2, ctypes, ensurepip, lzma, sqlite3, ssl, uuid, venv, zlib"

# Python 3.10 (not in Debian 12): a shared-library build of it from the build context (containers/images.py stages
# an existing installation there), placed as the official image places it, on Debian's runtime libraries.
FROM python311 AS python310
COPY python3.10/ /usr/local/
RUN ldconfig && python3.10 -c "import bz2, ctypes, ensurepip, lzma, sqlite3, ssl, uuid, venv, zlib"
