using System.Text;
using KvmStorage.Core.Backends;
using KvmStorage.Core.Backends.Offline;
using KvmStorage.Core.Errors;
using KvmStorage.Core.IO;
using KvmStorage.Core.Pools;
using KvmStorage.Core.Tests.Support;
using Xunit;

namespace KvmStorage.Core.Tests.Pools;

public sealed class OfflinePoolStoreTests : IDisposable
{
    private readonly TempDirectory root = new();
    private readonly OfflineHost host;

    public OfflinePoolStoreTests()
    {
        host = new OfflineHost(new HostPaths(root.Path));
    }

    public void Dispose() => root.Dispose();

    private static PoolDefinition Dir(string name, string target) =>
        new PoolSpec { Type = PoolType.Dir, Name = name, TargetPath = target }.ToDefinition();

    private string Snapshot()
    {
        var sb = new StringBuilder();
        foreach (string entry in Directory.EnumerateFileSystemEntries(root.Path, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
        {
            var info = new FileInfo(entry);
            sb.Append(entry).Append('|').Append(info.LinkTarget).Append('|');
            // Lock files are empty, and a child process started elsewhere may briefly hold their lock while it forks.
            if (File.Exists(entry) && info.LinkTarget is null && !entry.EndsWith(".lock", StringComparison.Ordinal))
            {
                sb.Append(File.ReadAllText(entry)).Append('|').Append(File.GetUnixFileMode(entry));
            }

            sb.Append('\n');
        }

        return sb.ToString();
    }

    [Fact]
    public void Define_writes_the_file_as_libvirt_does_and_builds_the_target()
    {
        StoragePool pool = host.DefinePool(Dir("default", "/var/lib/libvirt/images"), new PoolDefineOptions { Build = true, Autostart = true });

        string file = Path.Combine(root.Path, "etc/libvirt/storage/default.xml");
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(file));
        string text = File.ReadAllText(file);
        Assert.StartsWith("<!--\nWARNING: THIS IS AN AUTO-GENERATED FILE.", text, StringComparison.Ordinal);
        Assert.Contains("  virsh pool-edit default\n", text, StringComparison.Ordinal);
        Assert.EndsWith("</pool>\n", text, StringComparison.Ordinal);
        Assert.Contains($"<uuid>{pool.Uuid}</uuid>", text, StringComparison.Ordinal);

        string target = Path.Combine(root.Path, "var/lib/libvirt/images");
        Assert.True(Directory.Exists(target));
        Assert.Equal((UnixFileMode)0b111_001_001, File.GetUnixFileMode(target));

        string link = Path.Combine(root.Path, "etc/libvirt/storage/autostart/default.xml");
        Assert.Equal("/etc/libvirt/storage/default.xml", new FileInfo(link).LinkTarget);

        Assert.True(pool.Autostart);
        Assert.Equal(PoolState.Inactive, pool.PoolState);
        Assert.Equal("/var/lib/libvirt/images", pool.Path);
        Assert.Equal(target, pool.LocalPath);
        Assert.Equal(0, pool.VolumeCount);
        Assert.True(pool.Capacity > 0);
        Assert.Empty(Directory.EnumerateFiles(Path.GetDirectoryName(file)!, AtomicFile.TempPrefix + "*"));
    }

    [SkippableFact]
    public void Every_written_file_validates_against_libvirts_schema()
    {
        ExternalTool.Require("virt-xml-validate");
        ExternalTool.Require("xmllint");
        host.DefinePool(Dir("a", "/srv/a"), new PoolDefineOptions());
        host.DefinePool(new PoolSpec { Type = PoolType.Netfs, Name = "nfs", SourceHosts = ["nas"], SourceDirectory = "/export", TargetPath = "/mnt/nfs", ProtocolVersion = 4 }.ToDefinition(), new PoolDefineOptions());
        host.DefinePool(new PoolSpec { Type = PoolType.Rbd, Name = "ceph", SourceHosts = ["mon1", "mon2"], SourcePort = 6789, SourceName = "rbd", AuthUsername = "libvirt", SecretUsage = "client.libvirt" }.ToDefinition(), new PoolDefineOptions());
        host.DefinePool(new PoolSpec { Type = PoolType.Iscsi, Name = "san", SourceHosts = ["san1"], SourceDevices = ["iqn.2024-01.com.example:t1"], AuthUsername = "u", SecretUuid = Guid.NewGuid() }.ToDefinition(), new PoolDefineOptions());
        host.DefinePool(new PoolSpec { Type = PoolType.Logical, Name = "vg", SourceName = "vg0", SourceDevices = ["/dev/sdb", "/dev/sdc"] }.ToDefinition(), new PoolDefineOptions());
        host.DefinePool(new PoolSpec { Type = PoolType.Gluster, Name = "gl", SourceHosts = ["g1"], SourceName = "vol", SourceDirectory = "/vms" }.ToDefinition(), new PoolDefineOptions());
        host.DefinePool(new PoolSpec { Type = PoolType.Fs, Name = "fs", SourceDevices = ["/dev/sdd1"], SourceFormat = "xfs", TargetPath = "/srv/fs", Permissions = new Permissions((UnixFileMode)0b111_101_000, 0, 107, null) }.ToDefinition(), new PoolDefineOptions());
        host.DefinePool(new PoolSpec { Type = PoolType.Disk, Name = "disk", SourceDevices = ["/dev/sde"], SourceFormat = "gpt" }.ToDefinition(), new PoolDefineOptions());
        host.UpdatePool("a", d => d.Permissions = new Permissions((UnixFileMode)0b111_101_101, 107, 107, null), autostart: true);

        foreach (string file in Directory.EnumerateFiles(Path.Combine(root.Path, "etc/libvirt/storage"), "*.xml"))
        {
            ExternalTool.Result result = ExternalTool.Run("virt-xml-validate", file, "storagepool");
            Assert.True(result.ExitCode == 0, $"{file}: {result.Stderr}\n{File.ReadAllText(file)}");
        }
    }

    [Fact]
    public void Duplicate_name_is_refused_and_nothing_changes()
    {
        host.DefinePool(Dir("p", "/srv/p"), new PoolDefineOptions());
        string before = Snapshot();

        var ex = Assert.Throws<KvmStorageException>(() => host.DefinePool(Dir("p", "/srv/other"), new PoolDefineOptions { Build = true }));

        Assert.Equal(PoolErrorIds.PoolExists, ex.ErrorId);
        Assert.Equal(ErrorKind.AlreadyExists, ex.Kind);
        Assert.Equal(before, Snapshot());
    }

    [Theory]
    [InlineData("/srv/p")]
    [InlineData("/srv/p/")]
    public void Duplicate_target_path_is_refused_and_nothing_changes(string target)
    {
        host.DefinePool(Dir("p", "/srv/p"), new PoolDefineOptions());
        string before = Snapshot();

        var ex = Assert.Throws<KvmStorageException>(() => host.DefinePool(Dir("q", target), new PoolDefineOptions { Build = true }));

        Assert.Equal(PoolErrorIds.PoolTargetInUse, ex.ErrorId);
        Assert.Equal(before, Snapshot());
    }

    [Fact]
    public void Same_network_source_is_refused()
    {
        static PoolDefinition Nfs(string name, string target) => new PoolSpec { Type = PoolType.Netfs, Name = name, SourceHosts = ["nas"], SourceDirectory = "/export", TargetPath = target }.ToDefinition();
        host.DefinePool(Nfs("n1", "/mnt/a"), new PoolDefineOptions());
        var ex = Assert.Throws<KvmStorageException>(() => host.DefinePool(Nfs("n2", "/mnt/b"), new PoolDefineOptions()));
        Assert.Equal(PoolErrorIds.PoolTargetInUse, ex.ErrorId);
    }

    public static TheoryData<string> BadNames() => new()
    {
        string.Empty, "a/b", "..", ".", "a\0b", "line\nbreak", "tab\tname", ".hidden", "-dash", " padded", new string('x', 252), "../../etc/passwd", "/abs",
    };

    [Theory]
    [MemberData(nameof(BadNames))]
    public void Bad_names_are_refused_and_nothing_is_written(string name)
    {
        string before = Snapshot();
        var ex = Assert.Throws<KvmStorageException>(() => host.DefinePool(new PoolSpec { Type = PoolType.Dir, Name = "ok", TargetPath = "/srv/x" }.ToDefinition().With(d => d.Name = name), new PoolDefineOptions { Build = true }));
        Assert.Equal(PoolErrorIds.InvalidPoolName, ex.ErrorId);
        Assert.Equal(ErrorKind.InvalidArgument, ex.Kind);
        Assert.Equal(before, Snapshot());
        Assert.Throws<KvmStorageException>(() => new PoolSpec { Type = PoolType.Dir, Name = name, TargetPath = "/srv/x" }.ToDefinition());
    }

    [Theory]
    [InlineData("relative/path")]
    [InlineData("/srv/../etc")]
    [InlineData("/srv/./x")]
    [InlineData("")]
    public void Bad_target_paths_are_refused(string target)
    {
        string before = Snapshot();
        var ex = Assert.Throws<KvmStorageException>(() => host.DefinePool(Dir("p", "/srv/p").With(d => d.TargetPath = target), new PoolDefineOptions { Build = true }));
        Assert.Equal(ErrorIds.InvalidTargetPath, ex.ErrorId);
        Assert.Equal(before, Snapshot());
    }

    [Fact]
    public void A_broken_file_is_reported_and_the_other_pools_are_still_listed()
    {
        host.DefinePool(Dir("good", "/srv/good"), new PoolDefineOptions());
        string dir = Path.Combine(root.Path, "etc/libvirt/storage");
        File.WriteAllText(Path.Combine(dir, "broken.xml"), "<pool type='dir'><name>broken</name");
        File.WriteAllText(Path.Combine(dir, "notpool.xml"), "<domain type='kvm'><name>notpool</name></domain>");
        File.WriteAllText(Path.Combine(dir, "mismatch.xml"), "<pool type='dir'><name>other</name><target><path>/x</path></target></pool>");
        File.WriteAllText(Path.Combine(dir, "dtd.xml"), "<?xml version='1.0'?><!DOCTYPE pool [<!ENTITY a 'aaaa'><!ENTITY b '&a;&a;&a;&a;'>]><pool type='dir'><name>&b;</name></pool>");
        File.WriteAllText(Path.Combine(dir, "badtype.xml"), "<pool type='floppy'><name>badtype</name></pool>");

        IReadOnlyList<PoolReadResult> all = host.ListPools();

        Assert.Equal("good", Assert.Single(all, r => r.Pool is not null).Pool!.Name);
        var errors = all.Where(r => r.Error is not null).ToDictionary(r => Path.GetFileName(r.File), r => (KvmStorageException)r.Error!);
        Assert.Equal(5, errors.Count);
        Assert.All(errors.Values, e => Assert.Equal(PoolErrorIds.InvalidPoolDefinition, e.ErrorId));
        Assert.Contains("not well-formed", errors["broken.xml"].Message, StringComparison.Ordinal);
        Assert.Contains("<domain>", errors["notpool.xml"].Message, StringComparison.Ordinal);
        Assert.Contains("mismatch.xml", errors["mismatch.xml"].Message, StringComparison.Ordinal);
        Assert.Contains("DTD", errors["dtd.xml"].Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Unknown_pool_is_a_typed_not_found_error()
    {
        var ex = Assert.Throws<KvmStorageException>(() => host.GetPool("nope"));
        Assert.Equal(PoolErrorIds.PoolNotFound, ex.ErrorId);
        Assert.Equal(ErrorKind.NotFound, ex.Kind);
        Assert.Throws<KvmStorageException>(() => host.UndefinePool("nope", false));
        Assert.Throws<KvmStorageException>(() => host.UpdatePool("nope", _ => { }, true));
    }

    [Fact]
    public void Unknown_elements_and_attributes_survive_an_update_and_the_uuid_is_kept()
    {
        string dir = Path.Combine(root.Path, "etc/libvirt/storage");
        Directory.CreateDirectory(dir);
        string original = "<pool type='dir' xmlns:fs='http://libvirt.org/schemas/storagepool/fs/1.0'>\n  <name>custom</name>\n  <uuid>11111111-2222-3333-4444-555555555555</uuid>\n  <source>\n  </source>\n  <target>\n    <path>/srv/custom</path>\n    <future attr='1'>x</future>\n  </target>\n  <!-- a comment -->\n  <fs:mount_opts>\n    <fs:option name='sync'/>\n  </fs:mount_opts>\n</pool>\n";
        File.WriteAllText(Path.Combine(dir, "custom.xml"), original);

        StoragePool updated = host.UpdatePool("custom", d => d.Permissions = new Permissions((UnixFileMode)0b111_101_101, null, null, null), autostart: null);

        string text = File.ReadAllText(Path.Combine(dir, "custom.xml"));
        Assert.Equal(Guid.Parse("11111111-2222-3333-4444-555555555555"), updated.Uuid);
        Assert.Contains("<future attr='1'>x</future>", text, StringComparison.Ordinal);
        Assert.Contains("<!-- a comment -->", text, StringComparison.Ordinal);
        Assert.Contains("<fs:option name='sync'/>", text, StringComparison.Ordinal);
        Assert.Contains("xmlns:fs='http://libvirt.org/schemas/storagepool/fs/1.0'", text, StringComparison.Ordinal);
        Assert.Contains("<permissions>\n      <mode>0755</mode>\n    </permissions>", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Relative_and_absolute_autostart_links_are_both_read()
    {
        host.DefinePool(Dir("abs", "/srv/abs"), new PoolDefineOptions { Autostart = true });
        host.DefinePool(Dir("rel", "/srv/rel"), new PoolDefineOptions());
        File.CreateSymbolicLink(Path.Combine(root.Path, "etc/libvirt/storage/autostart/rel.xml"), "../rel.xml");

        Assert.True(host.GetPool("abs").Autostart);
        Assert.True(host.GetPool("rel").Autostart);

        host.UpdatePool("rel", _ => { }, autostart: false);
        Assert.False(host.GetPool("rel").Autostart);
        Assert.False(File.Exists(Path.Combine(root.Path, "etc/libvirt/storage/autostart/rel.xml")));
    }

    [Fact]
    public void State_is_running_when_libvirts_runtime_file_exists()
    {
        host.DefinePool(Dir("p", "/srv/p"), new PoolDefineOptions());
        Directory.CreateDirectory(Path.Combine(root.Path, "run/libvirt/storage"));
        File.WriteAllText(Path.Combine(root.Path, "run/libvirt/storage/p.xml"), "<poolstate/>");
        Assert.Equal(PoolState.Running, host.GetPool("p").PoolState);
    }

    [Fact]
    public void Undefine_keeps_volumes_and_refuses_to_delete_a_non_empty_target()
    {
        host.DefinePool(Dir("p", "/srv/p"), new PoolDefineOptions { Build = true, Autostart = true });
        string target = Path.Combine(root.Path, "srv/p");
        File.WriteAllText(Path.Combine(target, "disk.img"), "data");
        string before = Snapshot();

        var ex = Assert.Throws<KvmStorageException>(() => host.UndefinePool("p", deleteTarget: true));
        Assert.Equal(PoolErrorIds.PoolTargetNotEmpty, ex.ErrorId);
        Assert.Equal(before, Snapshot());

        host.UndefinePool("p", deleteTarget: false);
        Assert.True(File.Exists(Path.Combine(target, "disk.img")));
        Assert.False(File.Exists(Path.Combine(root.Path, "etc/libvirt/storage/p.xml")));
        Assert.False(File.Exists(Path.Combine(root.Path, "etc/libvirt/storage/autostart/p.xml")));
    }

    [Fact]
    public void Undefine_with_delete_removes_an_empty_target()
    {
        host.DefinePool(Dir("p", "/srv/p"), new PoolDefineOptions { Build = true });
        host.UndefinePool("p", deleteTarget: true);
        Assert.False(Directory.Exists(Path.Combine(root.Path, "srv/p")));
    }

    [Fact]
    public void Build_is_refused_for_types_the_module_cannot_build_offline()
    {
        string before = Snapshot();
        var ex = Assert.Throws<KvmStorageException>(() => host.DefinePool(new PoolSpec { Type = PoolType.Logical, Name = "vg", SourceName = "vg0" }.ToDefinition(), new PoolDefineOptions { Build = true }));
        Assert.Equal(PoolErrorIds.PoolTypeCannotBuild, ex.ErrorId);
        Assert.Equal(before, Snapshot());
    }

    [Fact]
    public void Concurrent_writers_in_separate_stores_lose_nothing()
    {
        const int writers = 16;
        Parallel.For(0, writers, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i =>
        {
            var own = new OfflineHost(new HostPaths(root.Path));
            own.DefinePool(Dir($"p{i}", $"/srv/p{i}"), new PoolDefineOptions { Build = true, Autostart = i % 2 == 0 });
            own.UpdatePool($"p{i}", d => d.Permissions = new Permissions((UnixFileMode)0b111_101_101, null, null, null), autostart: null);
        });

        var pools = host.ListPools();
        Assert.Equal(writers, pools.Count(r => r.Pool is not null));
        Assert.All(pools, r => Assert.Null(r.Error));
        Assert.All(pools, r => Assert.Equal((UnixFileMode)0b111_101_101, r.Pool!.Permissions.Mode));
    }

    [Fact]
    public void Racing_definitions_of_one_target_leave_exactly_one_pool()
    {
        int failures = 0;
        Parallel.For(0, 8, i =>
        {
            try
            {
                new OfflineHost(new HostPaths(root.Path)).DefinePool(Dir($"r{i}", "/srv/shared"), new PoolDefineOptions());
            }
            catch (KvmStorageException ex) when (ex.ErrorId == PoolErrorIds.PoolTargetInUse)
            {
                Interlocked.Increment(ref failures);
            }
        });

        Assert.Equal(7, failures);
        Assert.Single(host.ListPools());
    }
}

internal static class PoolDefinitionTestExtensions
{
    public static PoolDefinition With(this PoolDefinition definition, Action<PoolDefinition> change)
    {
        change(definition);
        return definition;
    }
}
