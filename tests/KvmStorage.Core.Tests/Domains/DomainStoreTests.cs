using KvmStorage.Core.Domains;
using KvmStorage.Core.Errors;
using Xunit;

namespace KvmStorage.Core.Tests.Domains;

public sealed class DomainStoreTests
{
    [Fact]
    public void Unknown_vm_is_a_typed_not_found()
    {
        using var host = new DomainTestHost("web01");
        var e = Assert.Throws<KvmStorageException>(() => host.Store.Get("nosuchvm"));
        Assert.Equal((ErrorKind.NotFound, DomainErrorIds.VMNotFound, (object?)"nosuchvm"), (e.Kind, e.ErrorId, e.Target));
        e = Assert.Throws<KvmStorageException>(() => host.Store.Edit("nosuchvm", d => 0));
        Assert.Equal(DomainErrorIds.VMNotFound, e.ErrorId);
        Assert.False(File.Exists(host.ConfigFile("nosuchvm")));
    }

    [Theory]
    [InlineData("")]
    [InlineData("../etc/passwd")]
    [InlineData("..")]
    [InlineData(".hidden")]
    public void Path_like_names_are_refused(string name)
    {
        using var host = new DomainTestHost();
        var e = Assert.Throws<KvmStorageException>(() => host.Store.Get(name));
        Assert.Equal(DomainErrorIds.InvalidVMName, e.ErrorId);
    }

    [Fact]
    public void Malformed_file_is_a_typed_error_naming_the_file()
    {
        using var host = new DomainTestHost("web01");
        File.WriteAllText(host.ConfigFile("broken"), "<domain type='kvm'>\n  <name>broken</name>\n  <devices>\n");
        var e = Assert.Throws<KvmStorageException>(() => host.Store.Get("broken"));
        Assert.Equal((ErrorKind.InvalidData, DomainErrorIds.DomainFileMalformed), (e.Kind, e.ErrorId));
        Assert.Contains(host.ConfigFile("broken"), e.Message, StringComparison.Ordinal);
        Assert.Equal(host.ConfigFile("broken"), e.Target);
    }

    [Fact]
    public void Dtd_is_refused_as_malformed()
    {
        using var host = new DomainTestHost();
        File.WriteAllText(host.ConfigFile("evil"), "<!DOCTYPE domain [<!ENTITY x SYSTEM 'file:///etc/shadow'>]><domain><name>&x;</name></domain>");
        Assert.Equal(DomainErrorIds.DomainFileMalformed, Assert.Throws<KvmStorageException>(() => host.Store.Get("evil")).ErrorId);
    }

    [Fact]
    public void Non_domain_file_is_refused()
    {
        using var host = new DomainTestHost();
        File.WriteAllText(host.ConfigFile("tpool"), "<pool type='dir'>\n  <name>tpool</name>\n</pool>\n");
        var e = Assert.Throws<KvmStorageException>(() => host.Store.Get("tpool"));
        Assert.Equal((ErrorKind.InvalidData, DomainErrorIds.NotADomainDefinition), (e.Kind, e.ErrorId));
        Assert.Contains("tpool.xml", e.Message, StringComparison.Ordinal);
        Assert.Equal(DomainErrorIds.NotADomainDefinition, Assert.Throws<KvmStorageException>(() => DomainDefinition.Parse("<network/>")).ErrorId);
    }

    [Fact]
    public void File_name_must_match_the_domain_name()
    {
        using var host = new DomainTestHost();
        File.Copy(DomainTestHost.FixturePath("web01.xml"), host.ConfigFile("other"));
        Assert.Equal(DomainErrorIds.DomainNameMismatch, Assert.Throws<KvmStorageException>(() => host.Store.Get("other")).ErrorId);
    }

    [Fact]
    public void List_reports_bad_files_without_hiding_the_others()
    {
        using var host = new DomainTestHost("web01", "db01");
        File.WriteAllText(host.ConfigFile("broken"), "<domain><name>broken");
        File.WriteAllText(host.ConfigFile("tpool"), "<pool type='dir'><name>tpool</name></pool>");
        File.WriteAllText(Path.Combine(host.Paths.QemuConfigDir, "notes.txt"), "not xml");
        Directory.CreateDirectory(Path.Combine(host.Paths.QemuConfigDir, "autostart"));

        IReadOnlyList<DomainFileEntry> entries = host.Store.List();
        Assert.Equal(new[] { "broken", "db01", "tpool", "web01" }, entries.Select(e => e.Name));
        Assert.Equal(DomainErrorIds.DomainFileMalformed, entries[0].Error?.ErrorId);
        Assert.Equal(DomainErrorIds.NotADomainDefinition, entries[2].Error?.ErrorId);
        Assert.Equal("db01", entries[1].Definition?.Name);
        Assert.Equal("web01", entries[3].Definition?.Name);
        Assert.Equal(new[] { "db01", "web01" }, host.Store.ListDefinitions().Select(d => d.Name));
    }

    [Fact]
    public void List_of_a_missing_folder_is_empty()
    {
        using var temp = new Support.TempDirectory();
        var store = new DomainStore(new Backends.HostPaths(temp.Combine("nothing")));
        Assert.Empty(store.List());
    }

    [Fact]
    public void Runtime_state_file_tells_whether_the_domain_runs()
    {
        using var host = new DomainTestHost("web01", "db01");
        Directory.CreateDirectory(host.Paths.QemuRunDir);
        string status = DomainTestHost.FixtureText("web01.xml").Split("-->\n\n")[1];
        File.WriteAllText(
            Path.Combine(host.Paths.QemuRunDir, "web01.xml"),
            "<!--\nWARNING: THIS IS AN AUTO-GENERATED FILE.\n-->\n\n<domstatus state='running' reason='booted' pid='4242'>\n  <taint flag='high-privileges'/>\n" + status + "</domstatus>\n");
        File.WriteAllText(Path.Combine(host.Paths.QemuRunDir, "db01.xml"), "<domstatus state='paused' reason='user' pid='4243'><domain type='qemu'><name>db01</name></domain></domstatus>");

        Assert.True(host.Store.IsRunning("web01"));
        Assert.True(host.Store.IsActive("web01"));
        Assert.Equal("paused", host.Store.GetRuntimeState("db01"));
        Assert.False(host.Store.IsRunning("db01"));
        Assert.True(host.Store.IsActive("db01"));
        Assert.False(host.Store.IsRunning("nosuchvm"));
        Assert.Null(host.Store.GetRuntimeState("nosuchvm"));

        File.WriteAllText(Path.Combine(host.Paths.QemuRunDir, "db01.xml"), "<domstatus state='running'");
        Assert.Equal(DomainErrorIds.RuntimeStateUnreadable, Assert.Throws<KvmStorageException>(() => host.Store.IsRunning("db01")).ErrorId);
    }

    [Fact]
    public void Find_disks_using_a_path_across_domains()
    {
        using var host = new DomainTestHost("web01", "db01");
        File.WriteAllText(host.ConfigFile("broken"), "<domain>");
        host.Store.Edit("db01", d => new DomainDiskEditor(d).AddDisk(new DiskSpec { SourcePath = "/var/lib/libvirt/images/shared.raw", Format = "raw", Settings = new() { Shareable = true } }));

        IReadOnlyList<DomainDisk> shared = host.Store.FindDisksUsing("/var/lib/libvirt/images/shared.raw");
        Assert.Equal(new[] { "db01:vdb", "web01:sda" }, shared.Select(d => d.ToString()).Order(StringComparer.Ordinal));

        var map = host.Store.FindDisksUsing(["/var/lib/libvirt/images/./web01-root.qcow2", "/dev/sdz", "/var/lib/libvirt/images/debian-12.iso", "/nowhere.img"]);
        Assert.Equal("web01:vda", Assert.Single(map["/var/lib/libvirt/images/./web01-root.qcow2"]).ToString());
        Assert.Equal("db01:sda", Assert.Single(map["/dev/sdz"]).ToString());
        Assert.Equal("hdc", Assert.Single(map["/var/lib/libvirt/images/debian-12.iso"]).Target);
        Assert.Empty(map["/nowhere.img"]);

        // A volume disk matches only when the caller can say where the pool keeps the volume.
        Assert.Empty(host.Store.FindDisksUsing("/srv/pools/default/web01-data.raw"));
        IReadOnlyList<DomainDisk> byVolume = host.Store.FindDisksUsing("/srv/pools/default/web01-data.raw", (pool, volume) => pool == "default" ? "/srv/pools/default/" + volume : null);
        Assert.Equal("web01:vdc", Assert.Single(byVolume).ToString());
    }

    [Fact]
    public void Edit_may_not_rename_the_domain()
    {
        using var host = new DomainTestHost("db01");
        byte[] before = File.ReadAllBytes(host.ConfigFile("db01"));
        var e = Assert.Throws<KvmStorageException>(() => host.Store.Edit("db01", d => d.Element.Element("name")!.Value = "db02"));
        Assert.Equal(DomainErrorIds.DomainNameMismatch, e.ErrorId);
        Assert.Equal(before, File.ReadAllBytes(host.ConfigFile("db01")));
        Assert.False(File.Exists(host.ConfigFile("db02")));
    }

    [Fact]
    public async Task Concurrent_edits_through_separate_stores_lose_nothing()
    {
        using var host = new DomainTestHost("web01");
        const int writers = 12;
        using var start = new ManualResetEventSlim();
        var tasks = Enumerable.Range(0, writers).Select(i => Task.Factory.StartNew(
            () =>
            {
                var store = new DomainStore(new Backends.HostPaths(host.Paths.Root));
                start.Wait();
                return store.Edit("web01", d => new DomainDiskEditor(d).AddDisk(new DiskSpec { SourcePath = $"/var/lib/libvirt/images/c{i}.qcow2", Format = "qcow2" })).Target;
            },
            CancellationToken.None,
            TaskCreationOptions.LongRunning,
            TaskScheduler.Default)).ToArray();
        start.Set();
        string[] targets = await Task.WhenAll(tasks);

        Assert.Equal(writers, targets.Distinct(StringComparer.Ordinal).Count());
        IReadOnlyList<DomainDisk> disks = host.Store.Get("web01").Disks;
        Assert.Equal(5 + writers, disks.Count);
        Assert.Equal(disks.Count, disks.Select(d => d.Target).Distinct(StringComparer.Ordinal).Count());
        for (int i = 0; i < writers; i++)
        {
            Assert.Single(disks, d => d.SourcePath == $"/var/lib/libvirt/images/c{i}.qcow2");
        }

        // vdc was taken by the original file: the new virtio disks fill vdb, then vdd onwards.
        Assert.Equal(new[] { "vdb" }.Concat(Enumerable.Range(3, writers - 1).Select(i => DiskTargetNames.Format("vd", i))), targets.Order(StringComparer.Ordinal));
        Assert.Empty(Directory.GetFiles(host.Paths.QemuConfigDir, ".kvmstorage-tmp-*"));
        DomainTestHost.AssertValidates(host.ConfigFile("web01"));
    }

    [Fact]
    public void Save_writes_the_libvirt_header_with_the_domain_name_and_mode_0600()
    {
        using var host = new DomainTestHost();
        DomainDefinition d = DomainDefinition.Parse("<domain type='kvm'><name>fresh</name><memory unit='KiB'>1024</memory><os><type>hvm</type></os><devices></devices></domain>");
        new DomainDiskEditor(d).AddDisk(new DiskSpec { SourcePath = "/srv/a.qcow2", Format = "qcow2" });
        host.Store.Save(d);
        string text = host.Read("fresh");
        Assert.StartsWith("<!--\nWARNING: THIS IS AN AUTO-GENERATED FILE. CHANGES TO IT ARE LIKELY TO BE\nOVERWRITTEN AND LOST. Changes to this xml configuration should be made using:\n  virsh edit fresh\nor other application using the libvirt API.\n-->\n\n<domain type='kvm'>\n", text, StringComparison.Ordinal);
        Assert.EndsWith("  <devices>\n    <disk type='file' device='disk'>\n      <driver name='qemu' type='qcow2'/>\n      <source file='/srv/a.qcow2'/>\n      <target dev='vda' bus='virtio'/>\n    </disk>\n  </devices>\n</domain>\n", text, StringComparison.Ordinal);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(host.ConfigFile("fresh")));
        DomainTestHost.AssertValidates(host.ConfigFile("fresh"));
    }
}
