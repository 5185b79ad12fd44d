# adl-stream processor image: docker build -t adl-stream .
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY adl_stream adl_stream
RUN pip install --no-cache-dir . && useradd --uid 10001 --no-create-home adl
USER 10001
EXPOSE 9464
ENTRYPOINT ["adl-stream"]
CMD ["run", "--config", "/etc/adl-stream/adl-stream.toml"]
