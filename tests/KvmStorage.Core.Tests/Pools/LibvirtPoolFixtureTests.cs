using System.Text;
using KvmStorage.Core.Pools;
using KvmStorage.Core.Xml;
using Xunit;

namespace KvmStorage.Core.Tests.Pools;

/// <summary>Files written by a real libvirtd 9.0 (pool-define-as of every type) are read and rewritten exactly.</summary>
public class LibvirtPoolFixtureTests
{
    private static string FixtureDir => Path.Combine(AppContext.BaseDirectory, "Fixtures", "libvirt-pools");

    public static TheoryData<string> Fixtures()
    {
        var data = new TheoryData<string>();
        foreach (string file in Directory.EnumerateFiles(FixtureDir, "*.xml").Order())
        {
            data.Add(Path.GetFileName(file));
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void Rewriting_a_libvirt_file_reproduces_it_byte_for_byte(string file)
    {
        string original = File.ReadAllText(Path.Combine(FixtureDir, file), Encoding.UTF8);
        PoolDefinition definition = PoolDefinition.FromXml(LibvirtXml.Parse(original));

        string rewritten = LibvirtXml.FormatFile(definition.Element, "virsh pool-edit " + definition.Name);

        Assert.Equal(original, rewritten);
    }

    /// <summary>The same requests that made the fixtures (virsh pool-define-as), made through <see cref="PoolSpec"/>.</summary>
    public static TheoryData<string, PoolSpec> Specs() => new()
    {
        { "p_dir.xml", new PoolSpec { Type = PoolType.Dir, Name = "p_dir", TargetPath = "/srv/tpool_dir" } },
        { "p_fs.xml", new PoolSpec { Type = PoolType.Fs, Name = "p_fs", SourceDevices = ["/dev/vg0/images"], SourceFormat = "ext4", TargetPath = "/srv/p_fs" } },
        { "p_netfs.xml", new PoolSpec { Type = PoolType.Netfs, Name = "p_netfs", SourceHosts = ["nfs.example.com"], SourceDirectory = "/exports/vm", SourceFormat = "nfs", TargetPath = "/mnt/p_nfs" } },
        { "p_logical.xml", new PoolSpec { Type = PoolType.Logical, Name = "p_logical", SourceName = "vg_vms" } },
        { "p_disk.xml", new PoolSpec { Type = PoolType.Disk, Name = "p_disk", SourceDevices = ["/dev/sdc"], SourceFormat = "gpt" } },
        { "p_iscsi.xml", new PoolSpec { Type = PoolType.Iscsi, Name = "p_iscsi", SourceHosts = ["iscsi.example.com"], SourceDevices = ["iqn.2013-06.com.example:iscsi-pool"] } },
        { "p_rbd.xml", new PoolSpec { Type = PoolType.Rbd, Name = "p_rbd", SourceHosts = ["mon1.example.com"], SourceName = "rbdpool", AuthUsername = "admin", SecretUuid = Guid.Parse("2a5b08e4-3dad-4ff3-8b84-e1a9f5a9e5a2") } },
        { "p_gluster.xml", new PoolSpec { Type = PoolType.Gluster, Name = "p_gluster", SourceHosts = ["gluster.example.com"], SourceName = "gvol0" } },
        { "p_perm.xml", new PoolSpec { Type = PoolType.Dir, Name = "p_perm", TargetPath = "/srv/p_perm", Permissions = new Permissions((UnixFileMode)0b111_101_101, 107, 107, null) } },
    };

    [Theory]
    [MemberData(nameof(Specs))]
    public void A_new_definition_is_written_exactly_as_libvirt_writes_it(string file, PoolSpec spec)
    {
        string expected = File.ReadAllText(Path.Combine(FixtureDir, file), Encoding.UTF8);
        Guid uuid = PoolDefinition.FromXml(LibvirtXml.Parse(expected)).Uuid!.Value;
        PoolSpec withUuid = new()
        {
            Type = spec.Type,
            Name = spec.Name,
            Uuid = uuid,
            TargetPath = spec.TargetPath,
            SourceHosts = spec.SourceHosts,
            SourceDevices = spec.SourceDevices,
            SourceDirectory = spec.SourceDirectory,
            SourceName = spec.SourceName,
            SourceFormat = spec.SourceFormat,
            AuthUsername = spec.AuthUsername,
            SecretUuid = spec.SecretUuid,
            Permissions = spec.Permissions,
        };

        string written = LibvirtXml.FormatFile(withUuid.ToDefinition().Element, "virsh pool-edit " + spec.Name);

        Assert.Equal(expected, written);
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void Typed_view_reads_every_pool_type(string file)
    {
        PoolDefinition d = PoolDefinition.FromXml(LibvirtXml.Load(Path.Combine(FixtureDir, file)));
        Assert.Equal(Path.GetFileNameWithoutExtension(file), d.Name);
        Assert.NotNull(d.Uuid);
        switch (d.Name)
        {
            case "p_netfs":
                Assert.Equal(PoolType.Netfs, d.Type);
                Assert.Equal("nfs.example.com", Assert.Single(d.Source.Hosts).Name);
                Assert.Equal("/exports/vm", d.Source.Directory);
                Assert.Equal("nfs", d.Source.Format);
                Assert.Equal("/mnt/p_nfs", d.TargetPath);
                break;
            case "p_rbd":
                Assert.Equal(PoolType.Rbd, d.Type);
                Assert.Null(d.TargetPath);
                Assert.Equal("rbdpool", d.Source.Name);
                Assert.Equal(new PoolSourceAuth("ceph", "admin", "2a5b08e4-3dad-4ff3-8b84-e1a9f5a9e5a2", null), d.Source.Auth);
                break;
            case "p_gluster":
                Assert.Equal(PoolType.Gluster, d.Type);
                Assert.Equal("gvol0", d.Source.Name);
                Assert.Equal("/", d.Source.Directory);
                break;
            case "p_perm":
                Assert.Equal(new Permissions((UnixFileMode)0b111_101_101, 107, 107, null), d.Permissions);
                break;
            case "p_logical":
                Assert.Equal("vg_vms", d.Source.Name);
                Assert.Equal("lvm2", d.Source.Format);
                Assert.Equal("/dev/vg_vms", d.TargetPath);
                break;
            case "p_iscsi":
                Assert.Equal("iqn.2013-06.com.example:iscsi-pool", Assert.Single(d.Source.Devices));
                break;
            case "p_disk":
                Assert.Equal("/dev/sdc", Assert.Single(d.Source.Devices));
                Assert.Equal("gpt", d.Source.Format);
                break;
            case "p_fs":
                Assert.Equal("/dev/vg0/images", Assert.Single(d.Source.Devices));
                Assert.Equal("ext4", d.Source.Format);
                break;
            case "p_dir":
                Assert.Equal(PoolType.Dir, d.Type);
                Assert.Equal("/srv/tpool_dir", d.TargetPath);
                Assert.True(d.Source.IsEmpty);
                break;
            default:
                Assert.Fail("unexpected fixture " + file);
                break;
        }
    }
}
