# selfsup: C11 library (build/libselfsup.a), CLI (build/selfsup), tests.
#   make            library and CLI
#   make test       build and run every test (the README's test command)
#   make SAN=1 test the same under AddressSanitizer + UBSan (build-san/)
#   make bench      SimCLR, BYOL and DINO steps, selfsup vs PyTorch side by side
CC      ?= cc
SAN     ?= 0
ifeq ($(SAN),1)
BUILD   ?= build-san
OPT     := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
else
BUILD   ?= build
OPT     := -O3 -march=native -g
endif
CFLAGS  += -std=c11 -Wall -Wextra -Wno-unused-parameter $(CFLAGS_EXTRA) $(OPT) -fopenmp -Iinclude -Isrc -MMD -MP
LDFLAGS += $(filter -fsanitize%,$(OPT)) -fopenmp

# Optional dependencies are probed, never required: OpenBLAS speeds up the
# matrix products; without it the plain C kernels run.
BLAS_OK := $(shell printf '#include <cblas.h>\nint main(void){return 0;}' | $(CC) -x c - -lopenblas -o /dev/null 2>/dev/null && echo 1)
ifeq ($(BLAS_OK),1)
CFLAGS  += -DSSL_HAVE_OPENBLAS
LIBS    += -lopenblas
endif
# oneDNN: faster convolutions (the "dnnl" backend, the default when found).
DNNL_OK := $(shell printf '#include <dnnl.h>\nint main(void){return dnnl_version() == 0;}' | $(CC) -x c - -ldnnl -o /dev/null 2>/dev/null && echo 1)
ifeq ($(DNNL_OK),1)
CFLAGS  += -DSSL_HAVE_DNNL
LIBS    += -ldnnl
endif
# libjpeg(-turbo) and libpng: JPEG / PNG image folders (--data DIR); without
# them such folders fail with a "built without JPEG/PNG support" error.
JPEG_OK := $(shell printf '#include <stdio.h>\n#include <jpeglib.h>\nint main(void){struct jpeg_decompress_struct c; jpeg_mem_src(&c, 0, 0); return 0;}' | $(CC) -x c - -ljpeg -o /dev/null 2>/dev/null && echo 1)
ifeq ($(JPEG_OK),1)
CFLAGS  += -DSSL_HAVE_JPEG
LIBS    += -ljpeg
endif
PNG_OK  := $(shell printf '#include <png.h>\nint main(void){return png_access_version_number() == 0;}' | $(CC) -x c - -lpng -o /dev/null 2>/dev/null && echo 1)
ifeq ($(PNG_OK),1)
CFLAGS  += -DSSL_HAVE_PNG
LIBS    += -lpng
endif
LIBS    += -lz -lm -lpthread

LIB_SRC  := $(sort $(filter-out src/cli/%,$(wildcard src/*/*.c)))
CLI_SRC  := $(sort $(wildcard src/cli/*.c))
TEST_SRC := $(sort $(wildcard tests/test_*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TESTS    := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

all: $(BUILD)/selfsup $(BUILD)/libselfsup.a
	@echo "selfsup built: BLAS=$(if $(BLAS_OK),openblas,none (plain C)) oneDNN=$(if $(DNNL_OK),yes,no) CUDA=not built"

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libselfsup.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/selfsup: $(CLI_OBJ) $(BUILD)/libselfsup.a
	$(CC) $(LDFLAGS) $(CLI_OBJ) $(BUILD)/libselfsup.a $(LIBS) -o $@

$(BUILD)/tests/%: tests/%.c tests/check.h tests/golden.h tests/graph_test.h $(BUILD)/libselfsup.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) $< $(BUILD)/libselfsup.a $(LIBS) -o $@

tests: $(TESTS) $(BUILD)/selfsup

$(BUILD)/bench/%: bench/%.c $(BUILD)/libselfsup.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) $< $(BUILD)/libselfsup.a $(LIBS) -o $@

test: tests
	BUILD=$(BUILD) SAN=$(SAN) bash tests/run.sh

bench: all $(BUILD)/bench/bench_step $(BUILD)/bench/peak
	BUILD=$(BUILD) bash scripts/bench.sh

clean:
	rm -rf build build-san

.PHONY: all tests test bench clean
-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d)
