using KvmStorage.Core.Backends;
using KvmStorage.Core.Backends.Offline;
using KvmStorage.Core.Domains;
using KvmStorage.Core.Tests.Support;
using Xunit;

namespace KvmStorage.Core.Tests.Domains;

/// <summary>How the persistent and the running VM's definitions merge into one disk list (Scope).</summary>
public sealed class DiskScopeTests
{
    private static DomainDefinition Domain(params (string Target, string? Source)[] disks) => DomainDefinition.Parse(
        "<domain type='qemu'><name>vm</name><devices>" +
        string.Concat(disks.Select(d => d.Source is null
            ? $"<disk type='file' device='cdrom'><target dev='{d.Target}' bus='sata'/><readonly/></disk>"
            : $"<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{d.Source}'/><target dev='{d.Target}' bus='virtio'/></disk>")) +
        "</devices></domain>");

    [Fact]
    public void Without_a_running_VM_every_disk_is_persistent()
    {
        using var root = new TempDirectory();
        var disks = new DiskAttachments(new OfflineHost(new HostPaths(root.Path))).GetDisks(Domain(("vda", "/a.img"), ("sda", null)));
        Assert.All(disks, d => Assert.Equal(VMDiskScope.Persistent, d.Scope));
    }

    [Fact]
    public void Disks_merge_by_target_and_source()
    {
        using var root = new TempDirectory();
        var attachments = new DiskAttachments(new OfflineHost(new HostPaths(root.Path)));
        DomainDefinition persistent = Domain(("vda", "/a.img"), ("vdb", "/b.img"), ("sda", null), ("vdd", "/d.img"));
        DomainDefinition live = Domain(("vda", "/a.img"), ("vdb", "/other.img"), ("sda", null), ("vdc", "/c.img"));

        var disks = attachments.GetDisks(persistent, live).Select(d => (d.Target, d.Source, d.Scope)).ToList();

        Assert.Equal(
            [
                ("vda", "/a.img", VMDiskScope.Both),
                ("vdb", "/b.img", VMDiskScope.Persistent),
                ("sda", null, VMDiskScope.Both),
                ("vdd", "/d.img", VMDiskScope.Persistent),
                ("vdb", "/other.img", VMDiskScope.Live),
                ("vdc", "/c.img", VMDiskScope.Live),
            ],
            disks);
    }
}
