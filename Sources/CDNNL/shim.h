// oneDNN 2.6 C API (v2: *_desc_init + dnnl_primitive_desc_create).
#include <oneapi/dnnl/dnnl.h>

// Argument indices re-exported as plain constants: the DNNL_ARG_* macros alias other macros,
// which Swift's importer does not always follow.
static const int senet_arg_src = DNNL_ARG_SRC;
static const int senet_arg_dst = DNNL_ARG_DST;
static const int senet_arg_weights = DNNL_ARG_WEIGHTS;
static const int senet_arg_bias = DNNL_ARG_BIAS;
static const int senet_arg_diff_src = DNNL_ARG_DIFF_SRC;
static const int senet_arg_diff_dst = DNNL_ARG_DIFF_DST;
static const int senet_arg_diff_weights = DNNL_ARG_DIFF_WEIGHTS;
static const int senet_arg_diff_bias = DNNL_ARG_DIFF_BIAS;
static const int senet_arg_from = DNNL_ARG_FROM;
static const int senet_arg_to = DNNL_ARG_TO;
static const int senet_arg_scratchpad = DNNL_ARG_SCRATCHPAD;

// The second source of a binary post-op (the index of the post-op in its chain).
static inline int senet_arg_post_op_src1(int index) { return DNNL_ARG_ATTR_MULTIPLE_POST_OP(index) | DNNL_ARG_SRC_1; }
