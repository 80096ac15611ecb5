/*
 * The stub guest of virtsnap's live-domain tests: a multiboot (v1) kernel
 * for QEMU's -kernel loader that prints "VIRTSNAP-STUB-READY" on COM1 and
 * then halts for ever, touching no memory. It needs no OS, so it runs
 * under KVM (kvm_pvm included) as well as TCG; the tests give it
 * non-trivial RAM from a memory-backend-file of random bytes instead of
 * letting it write RAM (guest writes are slow under kvm_pvm).
 *
 * Build: gcc -m32 -c stub.S -o stub.o && ld -m elf_i386 -Ttext=0x100000 -e _start -o stub.elf stub.o
 */
        .code32
        .text
        .globl _start
        .align 4
header:
        .long 0x1BADB002                 /* multiboot magic */
        .long 0x00000000                 /* flags */
        .long -(0x1BADB002 + 0x00000000) /* checksum */
_start:
        cli
        mov     $0x3F8, %dx
        mov     $banner, %esi
1:      lodsb
        test    %al, %al
        jz      2f
        out     %al, %dx
        jmp     1b
2:      hlt
        jmp     2b
banner:
        .asciz "VIRTSNAP-STUB-READY\n"
