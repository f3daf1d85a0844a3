using KvmStorage.Core.Backends;
using KvmStorage.Core.Backends.Live;
using KvmStorage.Core.Backends.Offline;
using KvmStorage.Core.Domains;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Hosting;
using KvmStorage.Core.Images;
using KvmStorage.Core.Libvirt;
using KvmStorage.Core.Pools;
using KvmStorage.Core.Volumes;
using Xunit;

namespace KvmStorage.Core.Tests.Libvirt;

/// <summary>
/// The P/Invoke layer and the live backend against libvirt's in-process test driver (the <c>test:///</c> URIs of
/// libvirt's drvtest page): no daemon, state per connection. Skipped where libvirt.so.0 is not installed.
/// </summary>
public sealed class LibvirtTestDriverTests
{
    private static readonly string FixtureUri = "test://" + Path.Combine(AppContext.BaseDirectory, "Fixtures", "Libvirt", "node.xml");

    private static LiveHost OpenDefault(bool readOnly = false)
    {
        Skip.IfNot(LibvirtLibrary.IsAvailable, "libvirt.so.0 is not installed (package libvirt0)");
        return LiveHost.Open("test:///default", readOnly);
    }

    [SkippableFact]
    public void Connection_reports_uri_versions_and_hostname()
    {
        using LiveHost host = OpenDefault();
        Assert.Equal("test:///default", host.Connection.Uri);
        Assert.True(host.Connection.GetLibraryVersion() >= 1_000_000);
        Assert.False(string.IsNullOrEmpty(host.Connection.GetHostname()));
        Assert.True(host.Connection.IsAlive);
        Assert.False(host.IsLocal);
    }

    [SkippableFact]
    public void Default_node_lists_its_pool_with_state_and_space()
    {
        using LiveHost host = OpenDefault();
        StoragePool pool = Assert.Single(host.ListPools().Select(r => r.Pool!), p => p.Name == "default-pool");
        Assert.Equal(PoolState.Running, pool.PoolState);
        Assert.Equal(PoolType.Dir, pool.PoolType);
        Assert.True(pool.Capacity > 0);
        Assert.Equal("test:///default", pool.HostName);
        Assert.NotNull(pool.Path);
    }

    [SkippableFact]
    public void Missing_pool_is_PoolNotFound_with_libvirts_code_and_message()
    {
        using LiveHost host = OpenDefault();
        var ex = Assert.Throws<LibvirtException>(() => host.GetPool("does-not-exist"));
        Assert.Equal(LibvirtErrorCodes.NoStoragePool, ex.Code);
        Assert.Equal(PoolErrorIds.PoolNotFound, ex.ErrorId);
        Assert.Equal(ErrorKind.NotFound, ex.Kind);
        Assert.Contains("does-not-exist", ex.LibvirtMessage, StringComparison.Ordinal);
        Assert.Equal("virStoragePoolLookupByName", ex.Function);
    }

    [SkippableFact]
    public void Missing_domain_is_VMNotFound()
    {
        using LiveHost host = OpenDefault();
        var ex = Assert.Throws<LibvirtException>(() => host.GetDomain("no-such-vm"));
        Assert.Equal(LibvirtErrorCodes.NoDomain, ex.Code);
        Assert.Equal(DomainErrorIds.VMNotFound, ex.ErrorId);
    }

    [SkippableFact]
    public void Pool_lifecycle_define_build_start_refresh_stop_undefine()
    {
        using LiveHost host = OpenDefault();
        PoolDefinition definition = new PoolSpec { Type = PoolType.Dir, Name = "lifecycle", TargetPath = "/srv/lifecycle" }.ToDefinition();
        StoragePool defined = host.DefinePool(definition, new PoolDefineOptions { Autostart = true });
        Assert.Equal(PoolState.Inactive, defined.PoolState);
        Assert.True(defined.Persistent);
        Assert.True(defined.Autostart);
        Assert.Equal("/srv/lifecycle", defined.Path);

        Assert.Equal(PoolState.Running, host.StartPool("lifecycle", build: false).PoolState);
        Assert.Equal(PoolState.Running, host.RefreshPool("lifecycle").PoolState);

        StoragePool changed = host.UpdatePool("lifecycle", d => d.Permissions = new Permissions((UnixFileMode)0b111_101_101, null, null, null), autostart: false);
        Assert.False(changed.Autostart);
        Assert.Equal(defined.Uuid, changed.Uuid);

        Assert.Equal(PoolState.Inactive, host.StopPool("lifecycle").PoolState);
        host.UndefinePool("lifecycle", deleteTarget: false);
        Assert.DoesNotContain(host.ListPools(), r => r.Pool?.Name == "lifecycle");
    }

    [SkippableFact]
    public void Defining_an_existing_name_is_PoolAlreadyExists()
    {
        using LiveHost host = OpenDefault();
        PoolDefinition definition = new PoolSpec { Type = PoolType.Dir, Name = "default-pool", TargetPath = "/srv/other" }.ToDefinition();
        var ex = Assert.Throws<KvmStorageException>(() => host.DefinePool(definition, new PoolDefineOptions()));
        Assert.Equal(PoolErrorIds.PoolExists, ex.ErrorId);
    }

    [SkippableFact]
    public void Xml_libvirt_rejects_is_a_typed_error_with_libvirts_message()
    {
        using LiveHost host = OpenDefault();
        // Something only libvirt's schema catches (a missing target path is refused before libvirt is asked).
        PoolDefinition definition = new PoolSpec { Type = PoolType.Dir, Name = "no-target", TargetPath = "/srv/x" }.ToDefinition();
        definition.Element.Element("target")!.Add(new System.Xml.Linq.XElement("unknown-element"));
        var ex = Assert.Throws<LibvirtException>(() => host.DefinePool(definition, new PoolDefineOptions()));
        Assert.Contains(ex.Code, new[] { LibvirtErrorCodes.XmlError, LibvirtErrorCodes.XmlInvalidSchema });
        Assert.StartsWith("LibvirtError", ex.ErrorId, StringComparison.Ordinal);
        Assert.Equal(ErrorKind.InvalidArgument, ex.Kind);
        Assert.False(string.IsNullOrWhiteSpace(ex.LibvirtMessage));
        Assert.DoesNotContain(host.ListPools(), r => r.Pool?.Name == "no-target");
    }

    [SkippableFact]
    public void Read_only_connection_refuses_writes_with_OperationDenied()
    {
        using LiveHost host = OpenDefault(readOnly: true);
        Assert.True(host.Connection.ReadOnly);
        Assert.NotEmpty(host.ListPools());
        var ex = Assert.Throws<LibvirtException>(() => host.StopPool("default-pool"));
        Assert.Equal(LibvirtErrorCodes.OperationDenied, ex.Code);
        Assert.Equal(LibvirtErrorIds.OperationDenied, ex.ErrorId);
        Assert.Equal(ErrorKind.PermissionDenied, ex.Kind);
        Assert.Contains("read only", ex.Message, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void Unreachable_uri_is_LibvirtConnectFailed()
    {
        Skip.IfNot(LibvirtLibrary.IsAvailable, "libvirt.so.0 is not installed (package libvirt0)");
        var ex = Assert.Throws<KvmStorageException>(() => LibvirtConnection.Open("qemu:///system?socket=/nonexistent/kvmstorage/libvirt-sock"));
        Assert.Equal(LibvirtErrorIds.ConnectFailed, ex.ErrorId);
        Assert.Equal(ErrorKind.ResourceUnavailable, ex.Kind);
        Assert.Contains("/nonexistent/kvmstorage/libvirt-sock", ex.Message, StringComparison.Ordinal);
    }

    [SkippableFact]
    public void Volumes_of_a_non_local_host_go_through_libvirt()
    {
        using LiveHost host = OpenDefault();
        var request = new VolumeCreateRequest
        {
            Pool = "default-pool",
            Name = "made.qcow2",
            Image = new ImageCreateOptions { Format = ImageFormat.Qcow2, VirtualSize = 1UL << 30 },
        };
        StorageVolume created = host.CreateVolume(request, null, CancellationToken.None);
        Assert.Equal("made.qcow2", created.Name);
        Assert.Equal("default-pool", created.Pool);
        Assert.Contains(host.ListVolumes("default-pool"), r => r.Volume?.Name == "made.qcow2");

        host.RemoveVolume("default-pool", "made.qcow2", force: false);
        var ex = Assert.Throws<LibvirtException>(() => host.GetVolume("default-pool", "made.qcow2"));
        Assert.Equal(VolumeErrorIds.VolumeNotFound, ex.ErrorId);
    }

    [SkippableFact]
    public void Fixture_node_gives_pools_volumes_and_domain_disks()
    {
        Skip.IfNot(LibvirtLibrary.IsAvailable, "libvirt.so.0 is not installed (package libvirt0)");
        using LiveHost host = LiveHost.Open(FixtureUri);
        StoragePool pool = host.GetPool("fixture-pool");
        Assert.Equal(2, pool.VolumeCount);
        Assert.Equal("/fixture/images", pool.Path);

        StorageVolume system = host.GetVolume("fixture-pool", "system.qcow2");
        Assert.Equal(ImageFormat.Qcow2, system.ImageFormat);
        Assert.Equal(10UL << 30, system.Capacity);
        Assert.Equal("/fixture/images/system.qcow2", system.Path);

        Assert.Equal(["data.raw", "system.qcow2"], host.ListVolumes("fixture-pool").Select(r => r.Volume!.Name));

        DomainDefinition vm = host.GetDomain("fixture-vm");
        DomainDisk disk = Assert.Single(vm.Disks);
        Assert.Equal("vda", disk.Target);
        Assert.Equal("/fixture/images/system.qcow2", disk.SourcePath);
        Assert.True(host.IsDomainActive("fixture-vm"));
        Assert.Contains(host.ListDomains(), d => d.Name == "fixture-vm" && d.Definition is not null);
    }

    [SkippableFact]
    public void Attach_the_test_driver_lacks_is_a_NotSupported_error_and_changes_nothing()
    {
        Skip.IfNot(LibvirtLibrary.IsAvailable, "libvirt.so.0 is not installed (package libvirt0)");
        using LiveHost host = LiveHost.Open(FixtureUri);
        var spec = new DiskSpec { SourcePath = "/fixture/images/data.raw", Format = "raw" };
        var ex = Assert.Throws<LibvirtException>(() => host.AttachDisk("fixture-vm", spec, DeviceScope.Default));
        Assert.Equal(LibvirtErrorCodes.NoSupport, ex.Code);
        Assert.Equal(ErrorKind.NotSupported, ex.Kind);
        Assert.Single(host.GetDomain("fixture-vm").Disks);
    }

    [SkippableFact]
    public void Live_scope_on_the_offline_backend_is_refused()
    {
        using var root = new Support.TempDirectory();
        var host = new OfflineHost(new HostPaths(root.Path));
        var ex = Assert.Throws<KvmStorageException>(() => host.DetachDisk("vm", "vdb", DeviceScope.Live, TimeSpan.Zero));
        Assert.Equal(BackendErrorIds.LiveChangeUnavailable, ex.ErrorId);
        var start = Assert.Throws<KvmStorageException>(() => host.StartPool("p", build: false));
        Assert.Equal(BackendErrorIds.DaemonRequired, start.ErrorId);
    }

    [Fact]
    public void Versions_decode_libvirts_encoding()
    {
        Assert.Equal(new Version(9, 0, 0), KvmConnection.ToVersion(9_000_000));
        Assert.Equal(new Version(7, 2, 11), KvmConnection.ToVersion(7_002_011));
    }

    [Fact]
    public void Local_uris_are_told_from_remote_ones()
    {
        Assert.True(LiveHost.IsLocalUri("qemu:///system"));
        Assert.True(LiveHost.IsLocalUri("qemu:///system?socket=/tmp/x/libvirt-sock"));
        Assert.True(LiveHost.IsLocalUri("qemu+tcp://127.0.0.1:16509/system"));
        Assert.False(LiveHost.IsLocalUri("qemu+ssh://kvm1.example.org/system"));
        Assert.False(LiveHost.IsLocalUri("test:///default"));
    }
}
