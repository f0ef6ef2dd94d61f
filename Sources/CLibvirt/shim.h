// libvirt's C API (libvirt-dev), for the libvirt driver.
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
