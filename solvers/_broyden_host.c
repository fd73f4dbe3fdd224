/* Broyden's per-iteration small math on the host, compiled: a CPython extension module
 * (solvers/_native.py builds and imports it; solvers/_broyden.py keeps the NumPy code it
 * replaces as the fallback, and tests/test_native.py checks that both give the same iterates).
 *
 * One call per iteration does the residual norms and the small math, sample by sample, over
 * at most a few thousand doubles. On a CPU, right after f has run through the caches, the
 * NumPy code's dozen calls and the Python around them cost 50-110 us per iteration; this
 * call a small part of that (studies/solver_host_work).
 *
 * The arrays, as in solvers/_broyden.py (B samples, C steps kept, C + 1 buffer rows), passed
 * by address:
 *   prods    (B, 2, cols)  the reduction's result, dtype of z: per sample the products of
 *                          rows [F, s_n] (or [s_n, F] when f_second) with buffer rows 0..cols-1
 *   fz_norm  (B,)          ||f(z)||, dtype of z
 *   scaled   (B, C, C + 1) diag(beta) (I - L)^{-1}, rows chronological, columns by buffer row
 *   u1       (B, C + 1)    1, then u = scaled S^T F (written here)
 *   weights  (B, C + 1)    the combination's weights, dtype of z (written here)
 *   later    (newest,)     buffer rows of s_1..s_n, chronological
 *   wrows    (newest + 1,) where the weights of F, s_1..s_n go in a weights row
 *   active   (B,)          bool, the samples still iterating; the others get zero weights
 * Returned: two lists of B floats, ||F|| = sqrt(F^T F) and ||F|| / (||f(z)|| + rel_eps), and
 * whether every sample is active, improved on ``best`` (a list of B floats, the tracker's
 * lowest residuals so far in the stop mode) and is not under ``tol``: the stop test's common
 * case (solvers/_common.py, IterateTracker.record_residuals), decided here in one pass.
 *
 * Sums run in index order in double; built with -ffp-contract=off, so no product is fused
 * with its sum.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define DEFINE_SMALL_MATH(NAME, T)                                                            \
static int NAME(int64_t batch, int64_t capacity, int64_t cols, int64_t newest, int64_t last,       \
         int64_t f_second, const T *prods, const int64_t *later, const int64_t *wrows,       \
         int64_t clear_weights, const uint8_t *active, double *scaled, double *u1,           \
         T *weights, const T *fz_norm, double *abs_out, double *rel_out, double rel_eps,      \
         double tiny, double skip_below, int64_t small_math)                                  \
{                                                                                             \
    const int64_t c1 = capacity + 1;                                                          \
    if (cols > c1 || newest >= capacity || newest < 0 || last < 0 || last >= cols)            \
        return 1;                                                                             \
    for (int64_t b = 0; b < batch; b++) {                                                     \
        const T *p = prods + b * 2 * cols;                                                    \
        const T *f_row = f_second ? p + cols : p;                                             \
        const T *s_row = f_second ? p : p + cols;                                             \
        abs_out[b] = sqrt((double)f_row[1]);                                                  \
        rel_out[b] = abs_out[b] / ((double)fz_norm[b] + rel_eps);                             \
        if (!small_math)                                                                      \
            continue;                                                                         \
        T *w = weights + b * c1;                                                              \
        if (!active[b]) {                                                                     \
            memset(w, 0, sizeof(T) * (size_t)c1);                                             \
            continue;                                                                         \
        }                                                                                     \
        double *s = scaled + b * capacity * c1;                                               \
        double *s_new = s + newest * c1;                                                      \
        /* row n of diag(beta) (I - L)^{-1}: beta_n (e_n + sum_j (s_n^T s_{j+1}) scaled_j), built  \
           in its own row, which the sum does not read */                                    \
        for (int64_t k = 0; k < cols; k++)                                                    \
            s_new[k] = 0.0;                                                                   \
        for (int64_t j = 0; j < newest; j++) {                                                \
            const double l = (double)s_row[later[j]];                                         \
            const double *s_j = s + j * c1;                                                   \
            for (int64_t k = 0; k < cols; k++)                                                \
                s_new[k] += l * s_j[k];                                                       \
        }                                                                                     \
        s_new[last] = 1.0;                                                                    \
        const double beta = 1.0 / ((double)s_row[last] + tiny); /* 1 / ||s_n||^2 */           \
        for (int64_t k = 0; k < cols; k++)                                                    \
            s_new[k] *= beta;                                                                 \
        /* u = scaled S^T F, chronological */                                                 \
        double *u = u1 + b * c1 + 1;                                                          \
        for (int64_t i = 0; i <= newest; i++) {                                               \
            const double *s_i = s + i * c1;                                                   \
            double acc = 0.0;                                                                 \
            for (int64_t k = 0; k < cols; k++)                                                \
                acc += s_i[k] * (double)f_row[k];                                             \
            u[i] = acc;                                                                       \
        }                                                                                     \
        /* s_{n+1} = direction / (1 + u_n); skipped (beta_n = 0) where 1 + u_n is tiny */     \
        const double denom = u[newest] + 1.0;                                                 \
        double minus_scale = -1.0;                                                            \
        if (fabs(denom) > skip_below)                                                         \
            minus_scale = -1.0 / denom;                                                       \
        else                                                                                  \
            memset(s_new, 0, sizeof(double) * (size_t)c1);                                    \
        if (clear_weights)                                                                    \
            memset(w, 0, sizeof(T) * (size_t)c1);                                             \
        const double *ua = u1 + b * c1; /* 1, u_0, ..., u_{n-1}: the weights of F, s_1..s_n */ \
        for (int64_t k = 0; k <= newest; k++)                                                 \
            w[wrows[k]] = (T)(ua[k] * minus_scale);                                           \
    }                                                                                         \
    return 0;                                                                                 \
}

DEFINE_SMALL_MATH(small_math_f32, float)
DEFINE_SMALL_MATH(small_math_f64, double)

#define N_ARGS 24

/* small_math(f64, batch, capacity, cols, newest, last, f_second, prods, later, wrows,
 *            clear_weights, active, scaled, u1, weights, fz_norm, rel_eps, tiny, skip_below,
 *            small_math, scratch, best, tol, use_rel) -> (abs list, rel list, all improved);
 *            addresses as ints, scratch: the address of 2 B doubles, best: a list of B floats */
static PyObject *py_small_math(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != N_ARGS) {
        PyErr_Format(PyExc_TypeError, "small_math takes %d arguments, got %zd", N_ARGS, nargs);
        return NULL;
    }
    int64_t n[7], flags[2];
    void *p[9];
    double d[3];
    for (int i = 0; i < 7; i++)
        n[i] = PyLong_AsLongLong(args[i]);
    const int ptr_at[9] = {7, 8, 9, 11, 12, 13, 14, 15, 20};
    for (int i = 0; i < 9; i++)
        p[i] = PyLong_AsVoidPtr(args[ptr_at[i]]);
    flags[0] = PyLong_AsLongLong(args[10]);
    flags[1] = PyLong_AsLongLong(args[19]);
    for (int i = 0; i < 3; i++)
        d[i] = PyFloat_AsDouble(args[16 + i]);
    if (PyErr_Occurred())
        return NULL;
    const int64_t batch = n[1];
    double *abs_out = (double *)p[8], *rel_out = abs_out + batch;
    int status;
    if (n[0])
        status = small_math_f64(batch, n[2], n[3], n[4], n[5], n[6], (const double *)p[0],
                                (const int64_t *)p[1], (const int64_t *)p[2], flags[0],
                                (const uint8_t *)p[3], (double *)p[4], (double *)p[5],
                                (double *)p[6], (const double *)p[7], abs_out, rel_out, d[0], d[1],
                                d[2], flags[1]);
    else
        status = small_math_f32(batch, n[2], n[3], n[4], n[5], n[6], (const float *)p[0],
                                (const int64_t *)p[1], (const int64_t *)p[2], flags[0],
                                (const uint8_t *)p[3], (double *)p[4], (double *)p[5],
                                (float *)p[6], (const float *)p[7], abs_out, rel_out, d[0], d[1],
                                d[2], flags[1]);
    if (status) {
        PyErr_SetString(PyExc_ValueError, "small_math: sizes out of range (cols, newest, last)");
        return NULL;
    }
    PyObject *best = args[21];
    const double tol = PyFloat_AsDouble(args[22]);
    const int64_t use_rel = PyLong_AsLongLong(args[23]);
    if (PyErr_Occurred())
        return NULL;
    if (!PyList_Check(best) || PyList_GET_SIZE(best) != batch) {
        PyErr_SetString(PyExc_TypeError, "small_math: best must be a list of batch floats");
        return NULL;
    }
    const uint8_t *active = (const uint8_t *)p[3];
    int all_improved = 1;
    for (int64_t b = 0; b < batch && all_improved; b++) {
        const double metric = use_rel ? rel_out[b] : abs_out[b];
        const double before = PyFloat_AsDouble(PyList_GET_ITEM(best, b));
        if (before == -1.0 && PyErr_Occurred())
            return NULL;
        all_improved = active[b] && metric < before && metric >= tol; /* false on NaN */
    }
    PyObject *abs_list = PyList_New(batch), *rel_list = PyList_New(batch);
    if (abs_list == NULL || rel_list == NULL)
        goto fail;
    for (int64_t b = 0; b < batch; b++) {
        PyObject *a = PyFloat_FromDouble(abs_out[b]), *r = PyFloat_FromDouble(rel_out[b]);
        if (a == NULL || r == NULL) {
            Py_XDECREF(a);
            Py_XDECREF(r);
            goto fail;
        }
        PyList_SET_ITEM(abs_list, b, a);
        PyList_SET_ITEM(rel_list, b, r);
    }
    return Py_BuildValue("(NNO)", abs_list, rel_list, all_improved ? Py_True : Py_False); /* takes both lists */
fail:
    Py_XDECREF(abs_list);
    Py_XDECREF(rel_list);
    return NULL;
}

static PyMethodDef methods[] = {
    {"small_math", (PyCFunction)(void (*)(void))py_small_math, METH_FASTCALL,
     "Broyden's per-iteration small math (see solvers/_broyden_host.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_broyden_host", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__broyden_host(void) { return PyModule_Create(&module); }
