# DefectLens for a GPU server (NVIDIA T4). Build: docker build -t defectlens .
# Weights go in a volume at /app/models; nothing is downloaded at run time.
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv fonts-nanum curl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md ./
COPY app ./app
# CUDA torch from the default index; faiss-gpu replaces faiss-cpu on the GPU image.
RUN pip install --upgrade pip && pip install ".[gpu,milvus]" && pip uninstall -y faiss-cpu && pip install --force-reinstall --no-deps faiss-gpu==1.15.1
COPY alembic.ini ./
COPY alembic ./alembic
COPY templates ./templates
COPY static ./static
COPY scripts ./scripts
RUN mkdir -p data models manual_store && useradd --create-home defectlens && chown -R defectlens /app
USER defectlens

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD curl -fsS http://127.0.0.1:8000/healthz || exit 1
# Migrations run before the server starts, never inside it.
CMD ["sh", "-c", "defectlens migrate && exec defectlens serve --host 0.0.0.0 --port 8000"]
