/* smartdns._udp: batched UDP I/O for smartdns.server.DNSDatagramPort (optional).
 *
 * The pure-Python read loop (DNSDatagramPort._read_each) makes two system calls per answer,
 * recvfrom and sendto, each wrapped in Python objects.  This module reads up to BATCH
 * datagrams with one recvmmsg(2) and sends answers with one sendmmsg(2), and does the replay
 * table's lookup (smartdns.server.QueryHandler.replay) in C.  It decides nothing about DNS:
 * the table's answers are the ones the Python handler made and stored, and every datagram the
 * table does not answer goes back to Python as (data, address), the address formatted as the
 * socket module formats it.  When this module cannot be built or imported, the Python loop
 * does the same work (tests/test_replay.py runs both and compares them).
 *
 * All calls are made with the GIL held: the socket is non-blocking (MSG_DONTWAIT), and the
 * buffers below are shared, so two threads must never be inside this module at once.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#define BATCH 64                 /* datagrams per recvmmsg / sendmmsg */
#define MAX_DATAGRAM 65535
#define HOST_CACHE 16            /* formatted client addresses kept (direct-mapped) */

static char *recv_buffers;       /* BATCH x buffer size, allocated on first use */
static Py_ssize_t recv_size;
static struct mmsghdr recv_msgs[BATCH];
static struct iovec recv_iov[BATCH];
static struct sockaddr_storage recv_names[BATCH];

static struct mmsghdr send_msgs[BATCH];
static struct iovec send_iov[BATCH][2];
static struct sockaddr_storage send_names[BATCH];
static PyObject *send_hold[BATCH];    /* the answer bytes each queued message points into */

static struct {
    struct sockaddr_storage addr;
    socklen_t len;
    PyObject *host;
} host_cache[HOST_CACHE];


static int ensure_buffers(Py_ssize_t size)
{
    if (recv_buffers != NULL && recv_size == size)
        return 0;
    char *fresh = PyMem_RawRealloc(recv_buffers, (size_t)size * BATCH);
    if (fresh == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    recv_buffers = fresh;
    recv_size = size;
    return 0;
}


/* The address as the socket module writes it: dotted quad, or IPv6 text with "%scope". */
static PyObject *format_host(const struct sockaddr_storage *ss)
{
    char text[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        if (inet_ntop(AF_INET, &sin->sin_addr, text, sizeof(text)) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        if (inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof(text)) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        if (sin6->sin6_scope_id != 0) {
            size_t used = strlen(text);
            char name[IF_NAMESIZE];
            if (if_indextoname(sin6->sin6_scope_id, name) != NULL)
                snprintf(text + used, sizeof(text) - used, "%%%s", name);
            else
                snprintf(text + used, sizeof(text) - used, "%%%u", (unsigned)sin6->sin6_scope_id);
        }
    } else {
        PyErr_SetString(PyExc_OSError, "unexpected address family");
        return NULL;
    }
    return PyUnicode_FromString(text);
}


static size_t address_bytes(const struct sockaddr_storage *ss, const unsigned char **start)
{
    if (ss->ss_family == AF_INET) {
        *start = (const unsigned char *)&((const struct sockaddr_in *)ss)->sin_addr;
        return 4;
    }
    /* IPv6: the address and the scope id, which are adjacent in sockaddr_in6 */
    *start = (const unsigned char *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
    return 16 + sizeof(uint32_t);
}


/* A new reference to the host text of ``ss``, formatted once per address while it stays in
 * the small cache (a busy server sees the same clients again and again). */
static PyObject *host_of(const struct sockaddr_storage *ss)
{
    const unsigned char *start;
    size_t n = address_bytes(ss, &start);
    unsigned int h = ss->ss_family;
    for (size_t i = 0; i < n; i++)
        h = h * 31 + start[i];
    unsigned int slot = h % HOST_CACHE;
    if (host_cache[slot].host != NULL && host_cache[slot].addr.ss_family == ss->ss_family) {
        const unsigned char *cached;
        address_bytes(&host_cache[slot].addr, &cached);
        if (memcmp(cached, start, n) == 0) {
            Py_INCREF(host_cache[slot].host);
            return host_cache[slot].host;
        }
    }
    PyObject *host = format_host(ss);
    if (host == NULL)
        return NULL;
    Py_XDECREF(host_cache[slot].host);
    memcpy(&host_cache[slot].addr, ss, sizeof(*ss));
    Py_INCREF(host);
    host_cache[slot].host = host;
    return host;
}


/* The socket module's address tuple: (host, port) or (host, port, flowinfo, scope_id). */
static PyObject *address_tuple(const struct sockaddr_storage *ss, PyObject *host)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        return Py_BuildValue("(Oi)", host, ntohs(sin->sin_port));
    }
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
    return Py_BuildValue("(OiII)", host, ntohs(sin6->sin6_port), ntohl(sin6->sin6_flowinfo),
                         sin6->sin6_scope_id);
}


/* Send the first ``count`` queued messages; a message the kernel refuses (a full buffer, an
 * unreachable client) is dropped, as a UDP server drops it, and the rest still go. */
static void flush_sends(int fd, int count)
{
    int done = 0;
    while (done < count) {
        int sent = sendmmsg(fd, send_msgs + done, (unsigned int)(count - done), MSG_DONTWAIT);
        if (sent < 0) {
            if (errno == EINTR)
                continue;
            done += 1;                         /* this one failed: skip it */
        } else {
            done += sent;
        }
    }
    for (int i = 0; i < count; i++)
        Py_CLEAR(send_hold[i]);
}


/* Queue ``head`` (may be NULL) + ``body`` to ``name``; ``hold`` keeps ``body``'s memory alive
 * until the flush (a new reference is taken). */
static void queue_send(int index, const char *head, size_t head_len, PyObject *hold, const char *body,
                       size_t body_len, const struct sockaddr_storage *name, socklen_t name_len)
{
    struct iovec *iov = send_iov[index];
    int parts = 0;
    if (head_len) {
        iov[parts].iov_base = (void *)head;
        iov[parts].iov_len = head_len;
        parts++;
    }
    iov[parts].iov_base = (void *)body;
    iov[parts].iov_len = body_len;
    parts++;
    memcpy(&send_names[index], name, name_len);
    struct msghdr *hdr = &send_msgs[index].msg_hdr;
    memset(hdr, 0, sizeof(*hdr));
    hdr->msg_name = &send_names[index];
    hdr->msg_namelen = name_len;
    hdr->msg_iov = iov;
    hdr->msg_iovlen = (size_t)parts;
    Py_INCREF(hold);
    send_hold[index] = hold;
}


PyDoc_STRVAR(serve_doc,
"serve(fd, size, replay, now, counts, misses, handle=None, waiting=None) -> (read, more)\n\n"
"Read up to 64 datagrams of at most ``size`` bytes from the non-blocking UDP socket ``fd``.\n"
"A datagram whose (source host, bytes after the ID) is a key of ``replay`` whose entry\n"
"(answer after the ID, valid until, tally) is still valid at ``now`` is answered with its\n"
"ID and that answer, and ``counts[tally]`` goes up by one.  Every other datagram is, with\n"
"``handle``, passed to ``handle(data, host, False, port)``: bytes returned are sent to the\n"
"datagram's source, None sends nothing, and anything else (or the exception raised) is\n"
"appended to the list ``waiting`` as (data, address, outcome) for the caller to finish.\n"
"Without ``handle``, and always for a scoped IPv6 source (host with '%'), the datagram is\n"
"appended to ``misses`` as (data, address).  ``read`` is how many datagrams were read,\n"
"``more`` is False once the socket had no more to read.  A receive error other than EAGAIN,\n"
"EINTR or ECONNREFUSED is raised as OSError.");


/* Pass one datagram to ``handle``; queue bytes for sending, put anything else in ``waiting``.
 * Returns the new queue length, or -1 on an error of our own (memory). */
static int dispatch(PyObject *handle, PyObject *waiting, PyObject *host, const char *data, Py_ssize_t len,
                    const struct sockaddr_storage *name, socklen_t name_len, int queued)
{
    PyObject *whole = PyBytes_FromStringAndSize(data, len);
    if (whole == NULL)
        return -1;
    uint16_t port = ntohs(name->ss_family == AF_INET ? ((const struct sockaddr_in *)name)->sin_port
                                                     : ((const struct sockaddr_in6 *)name)->sin6_port);
    PyObject *port_number = PyLong_FromLong(port);
    if (port_number == NULL) {
        Py_DECREF(whole);
        return -1;
    }
    PyObject *args[4] = {whole, host, Py_False, port_number};
    PyObject *outcome = PyObject_Vectorcall(handle, args, 4, NULL);
    Py_DECREF(port_number);
    if (outcome != NULL && PyBytes_CheckExact(outcome)) {
        queue_send(queued, NULL, 0, outcome, PyBytes_AS_STRING(outcome), (size_t)PyBytes_GET_SIZE(outcome),
                   name, name_len);
        Py_DECREF(outcome);                   /* queue_send holds its own reference */
        Py_DECREF(whole);
        return queued + 1;
    }
    if (outcome == Py_None) {
        Py_DECREF(outcome);
        Py_DECREF(whole);
        return queued;
    }
    if (outcome == NULL) {                    /* the handler raised: the caller logs it */
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {   /* KeyboardInterrupt, SystemExit */
            Py_DECREF(whole);
            return -1;
        }
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        PyErr_NormalizeException(&type, &value, &traceback);
        if (traceback != NULL && value != NULL)
            PyException_SetTraceback(value, traceback);
        Py_XDECREF(type);
        Py_XDECREF(traceback);
        outcome = value != NULL ? value : Py_NewRef(Py_None);
    }
    PyObject *addr = address_tuple(name, host);
    PyObject *item = addr ? PyTuple_Pack(3, whole, addr, outcome) : NULL;
    int ok = item != NULL && PyList_Append(waiting, item) == 0;
    Py_XDECREF(item);
    Py_XDECREF(addr);
    Py_DECREF(outcome);
    Py_DECREF(whole);
    return ok ? queued : -1;
}

static PyObject *serve(PyObject *module, PyObject *args)
{
    int fd;
    Py_ssize_t size;
    PyObject *replay, *counts, *misses, *handle = Py_None, *waiting = Py_None;
    double now;
    if (!PyArg_ParseTuple(args, "inO!dO!O!|OO", &fd, &size, &PyDict_Type, &replay, &now, &PyDict_Type, &counts,
                          &PyList_Type, &misses, &handle, &waiting))
        return NULL;
    if (handle != Py_None && (!PyCallable_Check(handle) || !PyList_Check(waiting))) {
        PyErr_SetString(PyExc_TypeError, "handle must be callable, with a list for waiting");
        return NULL;
    }
    if (size < 12 || size > MAX_DATAGRAM) {
        PyErr_SetString(PyExc_ValueError, "size out of range");
        return NULL;
    }
    if (ensure_buffers(size) < 0)
        return NULL;
    for (int i = 0; i < BATCH; i++) {
        recv_iov[i].iov_base = recv_buffers + (size_t)i * (size_t)size;
        recv_iov[i].iov_len = (size_t)size;
        struct msghdr *hdr = &recv_msgs[i].msg_hdr;
        memset(hdr, 0, sizeof(*hdr));
        hdr->msg_name = &recv_names[i];
        hdr->msg_namelen = sizeof(recv_names[i]);
        hdr->msg_iov = &recv_iov[i];
        hdr->msg_iovlen = 1;
    }
    int got;
    do {
        got = recvmmsg(fd, recv_msgs, BATCH, MSG_DONTWAIT, NULL);
    } while (got < 0 && errno == EINTR);
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNREFUSED)
            return Py_BuildValue("(iO)", 0, Py_False);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    int queued = 0;
    int failed = 0;
    for (int i = 0; i < got && !failed; i++) {
        const char *data = recv_iov[i].iov_base;
        Py_ssize_t len = (Py_ssize_t)recv_msgs[i].msg_len;
        const struct sockaddr_storage *name = &recv_names[i];
        PyObject *host = host_of(name);
        if (host == NULL) {
            failed = 1;
            break;
        }
        PyObject *tail = PyBytes_FromStringAndSize(len >= 2 ? data + 2 : data, len >= 2 ? len - 2 : 0);
        PyObject *key = tail ? PyTuple_Pack(2, host, tail) : NULL;
        Py_XDECREF(tail);
        PyObject *hit = NULL;
        if (key != NULL && PyDict_GET_SIZE(replay) > 0) {
            hit = PyDict_GetItemWithError(replay, key);     /* borrowed */
            if (hit == NULL && PyErr_Occurred())
                failed = 1;
        }
        Py_XDECREF(key);
        if (key == NULL)
            failed = 1;
        if (!failed && hit != NULL && PyTuple_Check(hit) && PyTuple_GET_SIZE(hit) == 3
                && PyBytes_Check(PyTuple_GET_ITEM(hit, 0))
                && now < PyFloat_AsDouble(PyTuple_GET_ITEM(hit, 1))) {
            PyObject *answer = PyTuple_GET_ITEM(hit, 0);
            PyObject *tally = PyTuple_GET_ITEM(hit, 2);
            PyObject *count = PyDict_GetItemWithError(counts, tally);
            PyObject *bumped = NULL;
            if (count == NULL && PyErr_Occurred())
                failed = 1;
            else
                bumped = PyLong_FromLong(count == NULL ? 1 : PyLong_AsLong(count) + 1);
            if (bumped == NULL || PyDict_SetItem(counts, tally, bumped) < 0)
                failed = 1;
            Py_XDECREF(bumped);
            if (!failed) {
                /* The client's ID (still in the receive buffer, which lives until the flush)
                 * and the stored answer after the ID. */
                queue_send(queued, data, 2, answer, PyBytes_AS_STRING(answer),
                           (size_t)PyBytes_GET_SIZE(answer), name, recv_msgs[i].msg_hdr.msg_namelen);
                queued++;
            }
        } else if (!failed) {
            if (PyErr_Occurred()) {              /* PyFloat_AsDouble on something odd */
                failed = 1;
            } else if (handle != Py_None && PyUnicode_FindChar(host, '%', 0, PyUnicode_GET_LENGTH(host), 1) < 0) {
                int now_queued = dispatch(handle, waiting, host, data, len, name, recv_msgs[i].msg_hdr.msg_namelen,
                                          queued);
                if (now_queued < 0)
                    failed = 1;
                else
                    queued = now_queued;
            } else {
                PyObject *whole = PyBytes_FromStringAndSize(data, len);
                PyObject *addr = whole ? address_tuple(name, host) : NULL;
                PyObject *pair = addr ? PyTuple_Pack(2, whole, addr) : NULL;
                if (pair == NULL || PyList_Append(misses, pair) < 0)
                    failed = 1;
                Py_XDECREF(whole);
                Py_XDECREF(addr);
                Py_XDECREF(pair);
            }
        }
        Py_DECREF(host);
    }
    if (queued)
        flush_sends(fd, queued);
    if (failed)
        return NULL;
    return Py_BuildValue("(iO)", got, got == BATCH ? Py_True : Py_False);
}


static PyMethodDef methods[] = {
    {"serve", serve, METH_VARARGS, serve_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "smartdns._udp",
    "Batched UDP receive and send (recvmmsg/sendmmsg) with the replay table's lookup; optional.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__udp(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "BATCH", BATCH) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
