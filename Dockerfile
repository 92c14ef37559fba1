# lightning_gm in a container: CPU build of PyTorch (swap the index URL for a CUDA build on GPU hosts).
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    LIGHTNING_GM_DATA=/data

WORKDIR /app
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY lightning_gm ./lightning_gm
COPY conf ./conf
RUN pip install .

# Mount datasets at /data (or let the platform download them) and runs at /app/runs.
VOLUME ["/data", "/app/runs"]
ENTRYPOINT ["lightning_gm"]
CMD ["--help"]
