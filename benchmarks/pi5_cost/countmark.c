/* qemu TCG plugin: counts executed guest instructions and prints the running count whenever the
 * guest makes the marker syscall (number MARK_NR, an unassigned aarch64 number the kernel answers
 * with ENOSYS): "mark <tag> <instructions>" on stderr. One process can so count several stretches
 * of work (the instructions between two marks), with no start-up or model load in them.
 * Built against qemu 7.2's include/qemu/qemu-plugin.h by benchmarks/pi5_cost/pi5cost. */
#include <inttypes.h>
#include <stdio.h>
#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MARK_NR 4000

static uint64_t insns;   /* inline-added per translation block: exact for one guest thread */

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &insns,
                                             qemu_plugin_tb_n_insns(tb));
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8)
{
    if (num == MARK_NR) {
        fprintf(stderr, "mark %" PRIu64 " %" PRIu64 "\n", a1, insns);
        fflush(stderr);
    }
}

static void at_exit(qemu_plugin_id_t id, void *p)
{
    fprintf(stderr, "insns %" PRIu64 "\n", insns);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
