# campaign-counters: one image for the scheduler, the workers and one-off commands.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir '.[mongo]'
ENV CAMPAIGN_COUNTERS_HOME=/data
VOLUME /data
ENTRYPOINT ["campaign-counters"]
CMD ["--help"]
