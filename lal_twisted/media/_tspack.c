/* One PES as MPEG-TS packets (ISO/IEC 13818-1), compiled.
 *
 * The per-frame work of the TS muxer (lal_twisted/media/ts/) in one call:
 * the PES header with PTS (and DTS when it differs), then the frame's pieces
 * cut into 188-byte TS packets with their headers, continuity counters, the
 * adaptation field of the first packet (PCR, random-access indicator) and the
 * stuffing of the last, written straight into the bytes object returned.
 * ts/pes.py holds the same function in Python (``pes_packets_py``), used when this
 * module is not built; the tests check that both give the same bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define TS_SIZE 188
#define TS_PAYLOAD 184
#define MAX_PIECES 64

typedef struct {
    const unsigned char *data;
    Py_ssize_t size;
} piece;

/* A 33-bit timestamp in the PES header's 5-byte layout, marker bits set. */
static void put_timestamp(unsigned char *out, int prefix, unsigned long long ts)
{
    out[0] = (unsigned char)((prefix << 4) | (((ts >> 30) & 0x07) << 1) | 1);
    out[1] = (unsigned char)(ts >> 22);
    out[2] = (unsigned char)(((ts >> 14) & 0xFE) | 1);
    out[3] = (unsigned char)(ts >> 7);
    out[4] = (unsigned char)(((ts << 1) & 0xFE) | 1);
}

/* Copies the next n bytes of the PES (header, then the pieces) to out. */
typedef struct {
    const piece *pieces;
    Py_ssize_t count, index, offset;
} reader;

static void read_into(reader *r, unsigned char *out, Py_ssize_t n)
{
    while (n > 0) {
        const piece *p = &r->pieces[r->index];
        Py_ssize_t take = p->size - r->offset;
        if (take > n)
            take = n;
        if (take)
            memcpy(out, p->data + r->offset, (size_t)take);
        out += take;
        n -= take;
        r->offset += take;
        if (r->offset == p->size) {
            r->index++;
            r->offset = 0;
        }
    }
}

PyDoc_STRVAR(pes_packets_doc,
"pes_packets(pid, cc, stream_id, pts, dts, pcr, random_access, parts) -> (bytes, cc)\n\n"
"The TS packets of one PES: stream_id, PTS and DTS (90 kHz, 33 bits; DTS\n"
"written only when it differs), the payload the concatenation of parts\n"
"(bytes-like objects).  The first packet carries continuity counter cc, the\n"
"PCR (pcr >= 0) and the random-access indicator; returns the packets and the\n"
"last counter used.");

static PyObject *pes_packets(PyObject *self, PyObject *args)
{
    int pid, cc, stream_id, random_access;
    unsigned long long pts, dts;
    long long pcr;
    PyObject *parts;
    if (!PyArg_ParseTuple(args, "iiiKKLpO", &pid, &cc, &stream_id, &pts, &dts, &pcr,
                          &random_access, &parts))
        return NULL;
    if (pid < 0 || pid > 0x1FFF || cc < 0 || cc > 15 || stream_id < 0 || stream_id > 0xFF) {
        PyErr_SetString(PyExc_ValueError, "pid, cc or stream_id out of range");
        return NULL;
    }
    /* A tuple: its items stay put and alive while their bytes are read (a
     * list could be changed by code a buffer export runs). */
    PyObject *seq = PySequence_Tuple(parts);
    if (seq == NULL)
        return NULL;
    Py_ssize_t count = PyTuple_GET_SIZE(seq);
    /* The pieces (the PES header first) on the stack, unless there are many
     * (a frame of many slices): then on the heap. */
    piece own_pieces[MAX_PIECES];
    Py_buffer own_views[MAX_PIECES];
    piece *pieces = own_pieces;
    Py_buffer *views = own_views;
    Py_ssize_t held = 0; /* views taken, to release */
    PyObject *result = NULL;
    if (count + 1 > MAX_PIECES) {
        pieces = PyMem_New(piece, count + 1);
        views = PyMem_New(Py_buffer, count);
        if (pieces == NULL || views == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }

    pts &= 0x1FFFFFFFFULL;
    dts &= 0x1FFFFFFFFULL;
    unsigned char head[19];
    int both = pts != dts;
    Py_ssize_t head_size = both ? 19 : 14;
    Py_ssize_t body = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyTuple_GET_ITEM(seq, i);
        piece *p = &pieces[i + 1];
        if (PyBytes_CheckExact(item)) {
            p->data = (const unsigned char *)PyBytes_AS_STRING(item);
            p->size = PyBytes_GET_SIZE(item);
        } else {
            if (PyObject_GetBuffer(item, &views[held], PyBUF_SIMPLE) < 0)
                goto done;
            p->data = views[held].buf;
            p->size = views[held].len;
            held++;
        }
        body += p->size;
    }
    Py_ssize_t length = 3 + (head_size - 9) + body;
    if (length > 0xFFFF)
        length = 0; /* unbounded: allowed for video */
    head[0] = 0;
    head[1] = 0;
    head[2] = 1;
    head[3] = (unsigned char)stream_id;
    head[4] = (unsigned char)(length >> 8);
    head[5] = (unsigned char)length;
    head[6] = 0x80;
    head[7] = both ? 0xC0 : 0x80;
    head[8] = (unsigned char)(head_size - 9);
    put_timestamp(head + 9, both ? 3 : 2, pts);
    if (both)
        put_timestamp(head + 14, 1, dts);
    pieces[0].data = head;
    pieces[0].size = head_size;

    /* The first packet's adaptation field: flags and PCR, or flags alone. */
    unsigned char field[7];
    Py_ssize_t field_size = 0;
    if (pcr >= 0) {
        unsigned long long base = (unsigned long long)pcr & 0x1FFFFFFFFULL;
        field[0] = random_access ? 0x50 : 0x10;
        field[1] = (unsigned char)(base >> 25);
        field[2] = (unsigned char)(base >> 17);
        field[3] = (unsigned char)(base >> 9);
        field[4] = (unsigned char)(base >> 1);
        field[5] = (unsigned char)(((base & 1) << 7) | 0x7E);
        field[6] = 0;
        field_size = 7;
    } else if (random_access) {
        field[0] = 0x40;
        field_size = 1;
    }
    Py_ssize_t total = head_size + body;
    Py_ssize_t first_room = TS_PAYLOAD - (field_size ? field_size + 1 : 0);
    Py_ssize_t packets = 1;
    if (total > first_room)
        packets += (total - first_room + TS_PAYLOAD - 1) / TS_PAYLOAD;
    result = PyBytes_FromStringAndSize(NULL, packets * TS_SIZE);
    if (result == NULL)
        goto done;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    reader r = {pieces, count + 1, 0, 0};
    Py_ssize_t left = total;
    unsigned char pid_high = (unsigned char)(pid >> 8), pid_low = (unsigned char)pid;
    for (Py_ssize_t k = 0; k < packets; k++, out += TS_SIZE) {
        if (k)
            cc = (cc + 1) & 0x0F;
        const unsigned char *own = k ? NULL : field;
        Py_ssize_t own_size = k ? 0 : field_size;
        Py_ssize_t room = TS_PAYLOAD - (own_size ? own_size + 1 : 0);
        Py_ssize_t take = left < room ? left : room;
        out[0] = 0x47;
        out[1] = (unsigned char)((k ? 0 : 0x40) | pid_high);
        out[2] = pid_low;
        Py_ssize_t pad = TS_PAYLOAD - take; /* adaptation field bytes, length byte included */
        if (!pad) {
            out[3] = (unsigned char)(0x10 | cc);
            read_into(&r, out + 4, take);
        } else {
            out[3] = (unsigned char)(0x30 | cc);
            out[4] = (unsigned char)(pad - 1);
            unsigned char *at = out + 5;
            if (pad > 1) {
                if (own_size) {
                    memcpy(at, own, (size_t)own_size);
                    at += own_size;
                    memset(at, 0xFF, (size_t)(pad - 1 - own_size));
                } else {
                    *at++ = 0x00; /* flags */
                    memset(at, 0xFF, (size_t)(pad - 2));
                }
            }
            read_into(&r, out + 4 + pad, take);
        }
        left -= take;
    }
    {
        PyObject *pair = Py_BuildValue("(Ni)", result, cc);
        result = pair;
    }
done:
    for (Py_ssize_t i = 0; i < held; i++)
        PyBuffer_Release(&views[i]);
    if (pieces != own_pieces)
        PyMem_Free(pieces);
    if (views != own_views)
        PyMem_Free(views);
    Py_DECREF(seq);
    return result;
}

static PyMethodDef methods[] = {
    {"pes_packets", pes_packets, METH_VARARGS, pes_packets_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_tspack",
    "One PES as MPEG-TS packets, compiled (see lal_twisted.media.ts).", -1, methods,
};

PyMODINIT_FUNC PyInit__tspack(void)
{
    return PyModule_Create(&module);
}
