#!/usr/bin/env bash
# Install the browser the tests marked `browser` drive: Debian's chromium and chromium-driver (Selenium, from PyPI,
# is in requirements/dev.in). Idempotent. Nothing is downloaded when the tests run.
exec "$(dirname "$0")/apt_tools.sh" "browser" "chromium chromedriver" "chromedriver --version" chromium chromium-driver
