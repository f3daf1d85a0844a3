using KvmStorage.Core.Domains;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Libvirt;
using KvmStorage.Core.Pools;
using KvmStorage.Core.Volumes;

namespace KvmStorage.Core.Backends.Live;

/// <summary>
/// A host reached through a libvirt connection: pools (<see cref="LivePools"/>) and domains (<see cref="LiveDomains"/>)
/// through libvirt's API, volumes (<see cref="LiveVolumes"/>) through the native image engine where their files are on
/// this machine and through libvirt's volume calls elsewhere. Every call gives libvirt's errors for a missing pool,
/// volume or domain the module's ids (<see cref="LibvirtErrorMapping"/>), as the offline backend names them.
/// </summary>
public sealed class LiveHost : IKvmHost, IBlockJobs, IDisposable
{
    private readonly LivePools pools;
    private readonly LiveVolumes volumes;
    private readonly LiveDomains domains;
    private readonly Secrets.LiveSecrets secrets;

    public LiveHost(LibvirtConnection connection, bool ownsConnection = true)
    {
        ArgumentNullException.ThrowIfNull(connection);
        Connection = connection;
        OwnsConnection = ownsConnection;
        Name = connection.Uri;
        Paths = new HostPaths("/");
        IsLocal = IsLocalUri(connection.Uri);
        pools = new LivePools(this);
        volumes = new LiveVolumes(this);
        domains = new LiveDomains(this);
        secrets = new Secrets.LiveSecrets(this);
    }

    public string Name { get; }

    public HostPaths Paths { get; }

    public LibvirtConnection Connection { get; }

    public bool OwnsConnection { get; }

    /// <summary>True when the daemon runs on this machine, so a pool's target path is a local folder.</summary>
    public bool IsLocal { get; }

    /// <summary>
    /// Local when the URI names no server or a loopback one; the test driver's volumes are fake, so it is never
    /// treated as local storage.
    /// </summary>
    public static bool IsLocalUri(string uri)
    {
        if (!System.Uri.TryCreate(uri, UriKind.Absolute, out Uri? parsed) || parsed.Scheme.StartsWith("test", StringComparison.Ordinal))
        {
            return false;
        }

        return parsed.Host.Length == 0 || parsed.IsLoopback;
    }

    public static LiveHost Open(string uri, bool readOnly = false, string? userName = null, string? password = null) =>
        new(LibvirtConnection.Open(uri, readOnly, userName, password));

    public void Dispose()
    {
        if (OwnsConnection)
        {
            Connection.Dispose();
        }
    }

    /// <summary>
    /// The native engine writes files itself, where libvirt's read-only check never runs: a read-only connection
    /// must refuse before anything is written, as libvirt does for its own calls.
    /// </summary>
    public void EnsureWritable(string what, string target)
    {
        if (Connection.ReadOnly)
        {
            throw new KvmStorageException(
                ErrorKind.PermissionDenied,
                LibvirtErrorIds.OperationDenied,
                $"{what} needs a writable connection, but the connection to {Name} is read-only. Connect again without -ReadOnly (Connect-LibvirtHost -Uri '{Name}').",
                target);
        }
    }

    /// <summary>The file is already changed: a failed refresh is reported with what was done, never left silent.</summary>
    public void RefreshAfterWrite(string pool, string done)
    {
        try
        {
            using LibvirtPool handle = Connection.LookupPool(pool);
            handle.Refresh();
        }
        catch (KvmStorageException ex)
        {
            throw new KvmStorageException(
                ErrorKind.ResourceUnavailable,
                BackendErrorIds.PoolRefreshFailed,
                $"{done}, but refreshing pool '{pool}' on {Name} failed, so libvirt may not list the change yet: {ex.Message} Run Update-StoragePool -Name '{pool}' to retry.",
                pool,
                LibvirtErrorMapping.Translate(ex));
        }
    }

    public IReadOnlyList<PoolReadResult> ListPools() => LibvirtErrorMapping.Call(pools.List);

    public StoragePool GetPool(string name) => LibvirtErrorMapping.Call(() => pools.Get(name));

    public StoragePool DefinePool(PoolDefinition definition, PoolDefineOptions options) => LibvirtErrorMapping.Call(() => pools.Define(definition, options));

    public StoragePool UpdatePool(string name, Action<PoolDefinition> change, bool? autostart) => LibvirtErrorMapping.Call(() => pools.Update(name, change, autostart));

    public void UndefinePool(string name, bool deleteTarget) => LibvirtErrorMapping.Call(() => pools.Undefine(name, deleteTarget));

    public StoragePool StartPool(string name, bool build) => LibvirtErrorMapping.Call(() => pools.Start(name, build));

    public StoragePool StopPool(string name) => LibvirtErrorMapping.Call(() => pools.Stop(name));

    public StoragePool RefreshPool(string name) => LibvirtErrorMapping.Call(() => pools.Refresh(name));

    public IReadOnlyList<VolumeReadResult> ListVolumes(string pool) => LibvirtErrorMapping.Call(() => volumes.List(pool));

    public StorageVolume GetVolume(string pool, string name) => LibvirtErrorMapping.Call(() => volumes.Get(pool, name));

    public StorageVolume GetVolumeByPath(string localPath) => LibvirtErrorMapping.Call(() => volumes.GetByPath(localPath));

    public StorageVolume CreateVolume(VolumeCreateRequest request, IProgress<ImageProgress>? progress, CancellationToken cancellationToken) =>
        LibvirtErrorMapping.Call(() => volumes.Create(request, progress, cancellationToken));

    public void RemoveVolume(string pool, string name, bool force) => LibvirtErrorMapping.Call(() => volumes.Remove(pool, name, force));

    public StorageVolume ResizeVolume(string pool, string name, ulong newSize, ImageResizeOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken) =>
        LibvirtErrorMapping.Call(() => volumes.Resize(pool, name, newSize, options, progress, cancellationToken));

    public IReadOnlyList<DomainFileEntry> ListDomains() => LibvirtErrorMapping.Call(domains.List);

    public IReadOnlyList<Secrets.VolumeSecret> ListSecrets() => secrets.List();

    public Secrets.VolumeSecret DefineVolumeSecret(string volumePath, ImagePassphrase value, Guid? uuid, string? description) =>
        secrets.Define(volumePath, value, uuid, description);

    public void RemoveSecret(Guid uuid) => secrets.Remove(uuid);

    public DomainDefinition GetDomain(string name) => LibvirtErrorMapping.Call(() => domains.Get(name));

    public DomainDefinition? GetLiveDomain(string name) => LibvirtErrorMapping.Call(() => domains.GetLive(name));

    /// <summary>Reads the persistent definition, changes it, and defines it again (libvirt validates it).</summary>
    public T EditDomain<T>(string name, Func<DomainDefinition, T> edit) => LibvirtErrorMapping.Call(() => domains.Edit(name, edit));

    public bool IsDomainActive(string name) => LibvirtErrorMapping.Call(() => domains.IsActive(name));

    public DomainDisk AttachDisk(string vmName, DiskSpec spec, DeviceScope scope) => LibvirtErrorMapping.Call(() => domains.AttachDisk(vmName, spec, scope));

    public DomainDisk UpdateDisk(string vmName, string target, DiskUpdate update, DeviceScope scope) =>
        LibvirtErrorMapping.Call(() => domains.UpdateDisk(vmName, target, update, scope));

    public DomainDisk ChangeDiskMedia(string vmName, string target, string? sourcePath, string? format, DeviceScope scope) =>
        LibvirtErrorMapping.Call(() => domains.ChangeDiskMedia(vmName, target, sourcePath, format, scope));

    public DomainDisk DetachDisk(string vmName, string target, DeviceScope scope, TimeSpan liveTimeout) =>
        LibvirtErrorMapping.Call(() => domains.DetachDisk(vmName, target, scope, liveTimeout));

    void IBlockJobs.BeginBackup(string vm, string backupXml, string? checkpointXml) => OnDomain(vm, d => d.BeginBackup(backupXml, checkpointXml, reuseExternal: true));

    (int Type, ulong Done, ulong Total) IBlockJobs.GetJob(string vm) => OnDomain(vm, d => d.GetJobInfo());

    int IBlockJobs.GetCompletedJob(string vm) => OnDomain(vm, d => d.GetCompletedJobType());

    void IBlockJobs.AbortJob(string vm) => OnDomain(vm, d => d.AbortJob());

    IReadOnlyList<string> IBlockJobs.ListCheckpointXml(string vm) => OnDomain(vm, d => d.ListCheckpointXml());

    void IBlockJobs.DeleteCheckpoint(string vm, string name) => OnDomain(vm, d => d.DeleteCheckpoint(name, metadataOnly: false));

    void IBlockJobs.StartBlockCopy(string vm, string disk, string destinationXml) => OnDomain(vm, d => d.BlockCopy(disk, destinationXml, reuseExternal: true));

    void IBlockJobs.StartActiveCommit(string vm, string disk) => OnDomain(vm, d => d.BlockCommitActive(disk));

    (int Type, ulong Cur, ulong End)? IBlockJobs.GetBlockJob(string vm, string disk) => OnDomain(vm, d => d.GetBlockJob(disk));

    void IBlockJobs.EndBlockJob(string vm, string disk, bool pivot) => OnDomain(vm, d => d.AbortBlockJob(disk, pivot));

    void IBlockJobs.CreateDiskOnlySnapshot(string vm, string snapshotXml) => OnDomain(vm, d => d.CreateDiskOnlySnapshot(snapshotXml, reuseExternal: true));

    private T OnDomain<T>(string vm, Func<LibvirtDomain, T> call)
    {
        EnsureWritable($"A job on the disks of '{vm}'", vm);
        return LibvirtErrorMapping.Call(() =>
        {
            using LibvirtDomain domain = Connection.LookupDomain(vm);
            return call(domain);
        });
    }

    private void OnDomain(string vm, Action<LibvirtDomain> call) => OnDomain(vm, d =>
    {
        call(d);
        return true;
    });
}
