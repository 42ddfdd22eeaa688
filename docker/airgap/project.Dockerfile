# The air-gapped stand-ins built on the project's own Airflow image (it holds both environments and the project):
# - statsd-exporter: monitoring/statsd_bridge.py, which reads statsd-exporter's mapping file and takes its flags;
# - tf-serving: /usr/bin/tensorflow_model_server as serving/tf_serving.py, which takes TF Serving's flags and
#   config files and runs the project's TF-Serving-compatible server (REST only: no gRPC port).
ARG AIRFLOW_IMAGE=credit-risk-airflow:latest

FROM ${AIRFLOW_IMAGE} AS statsd-exporter
ARG DEBIAN_FRONTEND=noninteractive
USER root
RUN apt-get update && apt-get install -y --no-install-recommends wget && rm -rf /var/lib/apt/lists/*
USER credit-risk
EXPOSE 9102 9125/udp
ENTRYPOINT ["/opt/credit-risk/.venvs/ml/bin/python", "-m", "monitoring.statsd_bridge"]
CMD ["--statsd.mapping-config=/etc/statsd-exporter/statsd_mapping.yml"]

FROM ${AIRFLOW_IMAGE} AS tf-serving
USER root
RUN printf '#!/bin/sh\nexec /opt/credit-risk/.venvs/ml/bin/python -m serving.tf_serving "$@"\n' \
      > /usr/bin/tensorflow_model_server \
 && chmod 755 /usr/bin/tensorflow_model_server
USER credit-risk
EXPOSE 8501
ENTRYPOINT ["/usr/bin/tensorflow_model_server"]
