/* The Kafka source's per-record loops in C: the router's Records made from the client's
 * records of one fetched partition, and the records of the Lambda event built from a batch.
 *
 * connectors/kafka/records.py holds the same two loops in Python (record_converter and
 * build_event) and uses them where this module is not built or does not apply; both give
 * equal results (tests/kafka/test_fast.py compares them). This module reads the client's
 * records through their attributes only (offset, timestamp, timestamp_type, key, value,
 * headers), so aiokafka's ConsumerRecord and the records it parses both work.
 *
 * Records are made without calling Record.__init__: `setup(Record, fields)` checks that the
 * class's fields are the slots this module expects, in that order, and keeps the slots'
 * offsets. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#define N_FIELDS 8
enum { F_LANE, F_POSITION, F_DATA, F_IDENTIFIER, F_SIZE, F_ARRIVAL, F_ATTEMPTS, F_UNFILTERED };
static const char *FIELD_NAMES[N_FIELDS] = {
    "lane", "position", "data", "identifier", "size", "arrival", "attempts", "unfiltered",
};

static PyTypeObject *record_type = NULL;
static Py_ssize_t field_offset[N_FIELDS];

/* Interned names: attributes of the client's records, keys of the Lambda record. */
static PyObject *s_offset, *s_timestamp, *s_timestamp_type, *s_key, *s_value, *s_headers;
static PyObject *s_topic, *s_partition, *s_timestampType;
static PyObject *s_log_append_time, *s_create_time, *s_empty, *s_zero, *s_one;

#define SLOT(obj, field) (*(PyObject **)((char *)(obj) + field_offset[field]))

static PyObject *
setup(PyObject *module, PyObject *args)
{
    PyObject *type, *names;
    if (!PyArg_ParseTuple(args, "O!O", &PyType_Type, &type, &names))
        return NULL;
    PyObject *fast = PySequence_Fast(names, "fields must be a sequence of names");
    if (fast == NULL)
        return NULL;
    if (PySequence_Fast_GET_SIZE(fast) != N_FIELDS) {
        Py_DECREF(fast);
        PyErr_Format(PyExc_TypeError, "Record has %zd fields, this module knows %d",
                     PySequence_Fast_GET_SIZE(fast), N_FIELDS);
        return NULL;
    }
    Py_ssize_t offsets[N_FIELDS];
    for (int i = 0; i < N_FIELDS; i++) {
        PyObject *name = PySequence_Fast_GET_ITEM(fast, i);
        if (!PyUnicode_Check(name) || PyUnicode_CompareWithASCIIString(name, FIELD_NAMES[i])) {
            Py_DECREF(fast);
            PyErr_Format(PyExc_TypeError, "Record field %d is %R, this module knows %s", i,
                         name, FIELD_NAMES[i]);
            return NULL;
        }
        PyObject *descr = PyDict_GetItemWithError(((PyTypeObject *)type)->tp_dict, name);
        if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type) ||
            ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
            Py_DECREF(fast);
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "Record.%U is not a slot", name);
            return NULL;
        }
        offsets[i] = ((PyMemberDescrObject *)descr)->d_member->offset;
    }
    Py_DECREF(fast);
    memcpy(field_offset, offsets, sizeof(offsets));
    Py_XSETREF(record_type, (PyTypeObject *)Py_NewRef(type));
    Py_RETURN_NONE;
}

/* len(obj) of a key or value (bytes, or anything with the buffer protocol). */
static Py_ssize_t
byte_length(PyObject *obj)
{
    if (PyBytes_CheckExact(obj))
        return PyBytes_GET_SIZE(obj);
    return PyObject_Length(obj);
}

/* size += what a key or value adds to the Lambda record (base64: a third more); 0, or -1 on
 * error. None adds nothing. */
static int
add_base64_size(PyObject *obj, Py_ssize_t *size)
{
    if (obj == Py_None)
        return 0;
    Py_ssize_t length = byte_length(obj);
    if (length < 0)
        return -1;
    *size += length * 4 / 3;
    return 0;
}

/* records(messages, lane, base_size, now): the Records of one lane's messages; what
 * record_converter's convert() gives with one slot. */
static PyObject *
records(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "records(messages, lane, base_size, now)");
        return NULL;
    }
    if (record_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "setup() was not called");
        return NULL;
    }
    PyObject *lane = args[1];
    Py_ssize_t base_size = PyLong_AsSsize_t(args[2]);
    if (base_size == -1 && PyErr_Occurred())
        return NULL;
    double now = PyFloat_AsDouble(args[3]);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    PyObject *messages = PySequence_Fast(args[0], "messages must be a sequence");
    if (messages == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(messages);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        goto error;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *msg = PySequence_Fast_GET_ITEM(messages, i);
        PyObject *key = NULL, *value = NULL, *headers = NULL, *offset = NULL, *stamp = NULL;
        PyObject *record = NULL;
        Py_ssize_t size = base_size;
        if ((key = PyObject_GetAttr(msg, s_key)) == NULL || add_base64_size(key, &size) < 0)
            goto fail;
        if ((value = PyObject_GetAttr(msg, s_value)) == NULL || add_base64_size(value, &size) < 0)
            goto fail;
        if ((headers = PyObject_GetAttr(msg, s_headers)) == NULL)
            goto fail;
        int any = PyObject_IsTrue(headers);
        if (any < 0)
            goto fail;
        if (any) {
            PyObject *pairs = PySequence_Fast(headers, "headers must be a sequence");
            if (pairs == NULL)
                goto fail;
            for (Py_ssize_t j = 0; j < PySequence_Fast_GET_SIZE(pairs); j++) {
                PyObject *pair = PySequence_Fast_GET_ITEM(pairs, j);
                if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
                    Py_DECREF(pairs);
                    PyErr_SetString(PyExc_ValueError, "a header is not a (name, value) pair");
                    goto fail;
                }
                Py_ssize_t name_length = PyObject_Length(PyTuple_GET_ITEM(pair, 0));
                PyObject *raw = PyTuple_GET_ITEM(pair, 1);
                int has = PyObject_IsTrue(raw);
                Py_ssize_t raw_length = has > 0 ? byte_length(raw) : 0;
                if (name_length < 0 || has < 0 || raw_length < 0) {
                    Py_DECREF(pairs);
                    goto fail;
                }
                size += name_length + 8 + raw_length * 4;
            }
            Py_DECREF(pairs);
        }
        if ((offset = PyObject_GetAttr(msg, s_offset)) == NULL)
            goto fail;
        if ((stamp = PyObject_GetAttr(msg, s_timestamp)) == NULL)
            goto fail;
        long long ms = PyLong_AsLongLong(stamp);
        if (ms == -1 && PyErr_Occurred())
            goto fail;
        PyObject *arrival = PyFloat_FromDouble(ms >= 0 ? (double)ms / 1000.0 : now);
        if (arrival == NULL)
            goto fail;
        PyObject *size_obj = PyLong_FromSsize_t(size);
        if (size_obj == NULL) {
            Py_DECREF(arrival);
            goto fail;
        }
        record = record_type->tp_alloc(record_type, 0);
        if (record == NULL) {
            Py_DECREF(arrival);
            Py_DECREF(size_obj);
            goto fail;
        }
        SLOT(record, F_LANE) = Py_NewRef(lane);
        SLOT(record, F_POSITION) = offset; /* the reference taken by GetAttr */
        offset = NULL;
        SLOT(record, F_DATA) = Py_NewRef(msg);
        SLOT(record, F_IDENTIFIER) = Py_NewRef(s_empty);
        SLOT(record, F_SIZE) = size_obj;
        SLOT(record, F_ARRIVAL) = arrival;
        SLOT(record, F_ATTEMPTS) = Py_NewRef(s_zero);
        SLOT(record, F_UNFILTERED) = Py_NewRef(Py_False);
        PyList_SET_ITEM(out, i, record);
        Py_DECREF(key);
        Py_DECREF(value);
        Py_DECREF(headers);
        Py_DECREF(stamp);
        continue;
    fail:
        Py_XDECREF(key);
        Py_XDECREF(value);
        Py_XDECREF(headers);
        Py_XDECREF(offset);
        Py_XDECREF(stamp);
        goto error;
    }
    Py_DECREF(messages);
    return out;
error:
    Py_XDECREF(out);
    Py_DECREF(messages);
    return NULL;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The standard base64 of obj's bytes, as str (what b2a_base64(obj, newline=False).decode()
 * gives). */
static PyObject *
base64_str(PyObject *obj)
{
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *in = view.buf;
    Py_ssize_t n = view.len;
    if (n > (PY_SSIZE_T_MAX / 4) * 3 - 3) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    PyObject *text = PyUnicode_New((n + 2) / 3 * 4, 127);
    if (text == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_UCS1 *o = PyUnicode_1BYTE_DATA(text);
    Py_ssize_t i = 0;
    for (; i + 2 < n; i += 3) {
        unsigned int v = (in[i] << 16) | (in[i + 1] << 8) | in[i + 2];
        *o++ = B64[v >> 18];
        *o++ = B64[(v >> 12) & 63];
        *o++ = B64[(v >> 6) & 63];
        *o++ = B64[v & 63];
    }
    if (i < n) {
        unsigned int v = in[i] << 16;
        if (i + 1 < n)
            v |= in[i + 1] << 8;
        *o++ = B64[v >> 18];
        *o++ = B64[(v >> 12) & 63];
        *o++ = i + 1 < n ? B64[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    PyBuffer_Release(&view);
    return text;
}

/* A header value as Lambda renders it (Java byte[]): a list of signed ints, or None. */
static PyObject *
signed_bytes(PyObject *raw)
{
    if (raw == Py_None)
        return Py_NewRef(Py_None);
    Py_buffer view;
    if (PyObject_GetBuffer(raw, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *out = PyList_New(view.len);
    if (out != NULL) {
        const signed char *in = view.buf;
        for (Py_ssize_t i = 0; i < view.len; i++) {
            PyObject *number = PyLong_FromLong(in[i]); /* small ints: no allocation */
            if (number == NULL) {
                Py_CLEAR(out);
                break;
            }
            PyList_SET_ITEM(out, i, number);
        }
    }
    PyBuffer_Release(&view);
    return out;
}

static PyObject *
lambda_headers(PyObject *headers)
{
    PyObject *pairs = PySequence_Fast(headers, "headers must be a sequence");
    if (pairs == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(pairs);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        goto error;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *pair = PySequence_Fast_GET_ITEM(pairs, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
            PyErr_SetString(PyExc_ValueError, "a header is not a (name, value) pair");
            goto error;
        }
        PyObject *one = PyDict_New();
        if (one == NULL)
            goto error;
        PyList_SET_ITEM(out, i, one);
        PyObject *ints = signed_bytes(PyTuple_GET_ITEM(pair, 1));
        if (ints == NULL)
            goto error;
        int failed = PyDict_SetItem(one, PyTuple_GET_ITEM(pair, 0), ints);
        Py_DECREF(ints);
        if (failed)
            goto error;
    }
    Py_DECREF(pairs);
    return out;
error:
    Py_XDECREF(out);
    Py_DECREF(pairs);
    return NULL;
}

/* Sets d[name] = value and drops the reference to value; -1 on error (also when value is
 * NULL: the error of what made it). */
static int
put_new(PyObject *d, PyObject *name, PyObject *value)
{
    if (value == NULL)
        return -1;
    int failed = PyDict_SetItem(d, name, value);
    Py_DECREF(value);
    return failed;
}

/* The Lambda record of one client record, as connectors.kafka.records.lambda_record. */
static PyObject *
lambda_record(PyObject *topic, PyObject *partition, PyObject *msg)
{
    PyObject *data = _PyDict_NewPresized(8); /* no resize while it fills */
    if (data == NULL)
        return NULL;
    PyObject *kind = NULL;
    if (PyDict_SetItem(data, s_topic, topic) || PyDict_SetItem(data, s_partition, partition))
        goto error;
    if (put_new(data, s_offset, PyObject_GetAttr(msg, s_offset)) ||
        put_new(data, s_timestamp, PyObject_GetAttr(msg, s_timestamp)))
        goto error;
    if ((kind = PyObject_GetAttr(msg, s_timestamp_type)) == NULL)
        goto error;
    int appended = PyObject_RichCompareBool(kind, s_one, Py_EQ);
    Py_CLEAR(kind);
    if (appended < 0 ||
        PyDict_SetItem(data, s_timestampType, appended ? s_log_append_time : s_create_time))
        goto error;
    PyObject *key = PyObject_GetAttr(msg, s_key);
    if (key == NULL)
        goto error;
    int failed = key != Py_None && put_new(data, s_key, base64_str(key));
    Py_DECREF(key);
    if (failed)
        goto error;
    PyObject *value = PyObject_GetAttr(msg, s_value);
    if (value == NULL)
        goto error;
    failed = value != Py_None && put_new(data, s_value, base64_str(value));
    Py_DECREF(value);
    if (failed)
        goto error;
    PyObject *headers = PyObject_GetAttr(msg, s_headers);
    if (headers == NULL)
        goto error;
    failed = put_new(data, s_headers, lambda_headers(headers));
    Py_DECREF(headers);
    if (failed)
        goto error;
    return data;
error:
    Py_DECREF(data);
    return NULL;
}

/* lambda_records(records): the ``records`` of the Lambda event, as build_event makes them:
 * {"<topic>-<partition>": [Lambda record, ...]} in the records' order, a lane being
 * (topic, partition) or (topic, partition, slot). */
static PyObject *
lambda_records(PyObject *module, PyObject *arg)
{
    if (record_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "setup() was not called");
        return NULL;
    }
    PyObject *batch = PySequence_Fast(arg, "records must be a sequence");
    if (batch == NULL)
        return NULL;
    PyObject *grouped = PyDict_New();
    if (grouped == NULL)
        goto error;
    PyObject *lane = NULL, *topic = NULL, *partition = NULL, *current = NULL;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(batch); i++) {
        PyObject *record = PySequence_Fast_GET_ITEM(batch, i);
        if (!Py_IS_TYPE(record, record_type)) {
            PyErr_SetString(PyExc_TypeError, "not a Record");
            goto error;
        }
        PyObject *its_lane = SLOT(record, F_LANE);
        PyObject *msg = SLOT(record, F_DATA);
        if (its_lane == NULL || msg == NULL) {
            PyErr_SetString(PyExc_AttributeError, "a Record without lane or data");
            goto error;
        }
        if (its_lane != lane) {
            if (!PyTuple_Check(its_lane) || PyTuple_GET_SIZE(its_lane) < 2) {
                PyErr_SetString(PyExc_TypeError, "a Kafka lane is (topic, partition[, slot])");
                goto error;
            }
            lane = its_lane;
            topic = PyTuple_GET_ITEM(lane, 0);
            partition = PyTuple_GET_ITEM(lane, 1);
            PyObject *name = PyUnicode_FromFormat("%S-%S", topic, partition);
            if (name == NULL)
                goto error;
            current = PyDict_GetItemWithError(grouped, name); /* borrowed */
            if (current == NULL) {
                if (PyErr_Occurred() || (current = PyList_New(0)) == NULL) {
                    Py_DECREF(name);
                    goto error;
                }
                int failed = PyDict_SetItem(grouped, name, current);
                Py_DECREF(current); /* the dict holds it */
                if (failed) {
                    Py_DECREF(name);
                    goto error;
                }
            }
            Py_DECREF(name);
        }
        PyObject *data = lambda_record(topic, partition, msg);
        if (data == NULL)
            goto error;
        int failed = PyList_Append(current, data);
        Py_DECREF(data);
        if (failed)
            goto error;
    }
    Py_DECREF(batch);
    return grouped;
error:
    Py_XDECREF(grouped);
    Py_DECREF(batch);
    return NULL;
}

static PyMethodDef methods[] = {
    {"setup", setup, METH_VARARGS,
     "setup(Record, fields): check Record's slots and keep their offsets"},
    {"records", (PyCFunction)(void (*)(void))records, METH_FASTCALL,
     "records(messages, lane, base_size, now) -> list[Record]"},
    {"lambda_records", lambda_records, METH_O,
     "lambda_records(records) -> dict[str, list[dict]]"},
    {NULL, NULL, 0, NULL},
};

static int
intern(PyObject **where, const char *text)
{
    *where = PyUnicode_InternFromString(text);
    return *where == NULL ? -1 : 0;
}

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "connectors.kafka._fast", NULL, -1, methods,
};

PyMODINIT_FUNC
PyInit__fast(void)
{
    if (intern(&s_offset, "offset") || intern(&s_timestamp, "timestamp") ||
        intern(&s_timestamp_type, "timestamp_type") || intern(&s_key, "key") ||
        intern(&s_value, "value") || intern(&s_headers, "headers") ||
        intern(&s_topic, "topic") || intern(&s_partition, "partition") ||
        intern(&s_timestampType, "timestampType") ||
        intern(&s_log_append_time, "LOG_APPEND_TIME") ||
        intern(&s_create_time, "CREATE_TIME") || intern(&s_empty, ""))
        return NULL;
    if ((s_zero = PyLong_FromLong(0)) == NULL || (s_one = PyLong_FromLong(1)) == NULL)
        return NULL;
    return PyModule_Create(&module_def);
}
