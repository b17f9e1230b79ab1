/* Holds at fd 3 a netlink socket with a message waiting to be read (the
 * kernel's answer to a request for the loopback link), which a dump
 * cannot carry: only the kernel could queue it again. */
#include "pingpong.h"
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

int main(void)
{
	int s = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
	if (s < 0 || (s != 3 && dup2(s, 3) != 3))
		return 2;
	struct {
		struct nlmsghdr h;
		struct ifinfomsg i;
	} req = {
		.h = {.nlmsg_len = sizeof(req), .nlmsg_type = RTM_GETLINK, .nlmsg_flags = NLM_F_REQUEST},
		.i = {.ifi_family = AF_UNSPEC, .ifi_index = 1},
	};
	if (send(3, &req, sizeof(req), 0) != sizeof(req))
		return 3;
	fill_pattern(4096);
	pingpong();
}
