/* Holds a socket at fd 3 of a kind dump does not support (netlink). */
#include "pingpong.h"
#include <linux/netlink.h>
#include <sys/socket.h>

int main(void)
{
	int s = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
	if (s < 0 || (s != 3 && dup2(s, 3) != 3))
		return 2;
	fill_pattern(4096);
	pingpong();
}
