/* A stand-in for CANN's libdrvdsmi_host.so: answers DrivingSDK's chip query as an Atlas A2 (910B). */
#include <string.h>

struct dsmi_chip_info_stru {
  char chip_type[32];
  char chip_name[32];
  char chip_version[32];
};

int dsmi_get_chip_info(int device_id, struct dsmi_chip_info_stru* info) {
  (void)device_id;
  memset(info, 0, sizeof(*info));
  strcpy(info->chip_type, "Ascend");
  strcpy(info->chip_name, "910B1");
  strcpy(info->chip_version, "V1");
  return 0;
}
