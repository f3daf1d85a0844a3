using System.Runtime.InteropServices;
using System.Text;
using KvmStorage.Core.Errors;

namespace KvmStorage.Core.Libvirt;

/// <summary>An open libvirt connection (<c>virConnectPtr</c>): the entry to pools, volumes and domains of one host.</summary>
public sealed unsafe class LibvirtConnection : IDisposable
{
    private readonly ConnectionHandle handle;

    private LibvirtConnection(ConnectionHandle handle, string requestedUri, bool readOnly)
    {
        this.handle = handle;
        ReadOnly = readOnly;
        Uri = LibvirtNative.TakeString(LibvirtNative.virConnectGetURI(handle)) ?? requestedUri;
    }

    /// <summary>The canonical URI libvirt reports for this connection.</summary>
    public string Uri { get; }

    public bool ReadOnly { get; }

    public bool IsClosed => handle.IsClosed;

    /// <summary>False once the connection is closed or the daemon went away.</summary>
    public bool IsAlive => !handle.IsClosed && LibvirtNative.virConnectIsAlive(handle) == 1;

    internal ConnectionHandle Handle => handle.IsClosed
        ? throw new KvmStorageException(ErrorKind.InvalidOperation, LibvirtErrorIds.ConnectionClosed, $"The connection to '{Uri}' is closed. Open a new one with Connect-LibvirtHost.", Uri)
        : handle;

    /// <summary>
    /// Opens <paramref name="uri"/> (null: libvirt's default). With a user name, libvirt's credential requests
    /// (user name, password) are answered from it; without, the connection uses whatever the transport provides
    /// (unix socket permissions, ssh keys, no auth).
    /// </summary>
    public static LibvirtConnection Open(string? uri, bool readOnly = false, string? userName = null, string? password = null)
    {
        LibvirtLibrary.EnsureLoaded();
        ConnectionHandle h;
        if (userName is null && password is null)
        {
            h = readOnly ? LibvirtNative.virConnectOpenReadOnly(uri) : LibvirtNative.virConnectOpen(uri);
        }
        else
        {
            var answers = new CredentialAnswers(userName, password);
            GCHandle data = GCHandle.Alloc(answers);
            try
            {
                int* types = stackalloc int[] { LibvirtNative.VIR_CRED_USERNAME, LibvirtNative.VIR_CRED_AUTHNAME, LibvirtNative.VIR_CRED_PASSPHRASE, LibvirtNative.VIR_CRED_ECHOPROMPT, LibvirtNative.VIR_CRED_NOECHOPROMPT };
                var auth = new LibvirtNative.VirConnectAuth
                {
                    CredTypes = types,
                    CredTypeCount = 5,
                    Callback = &AnswerCredentials,
                    CallbackData = GCHandle.ToIntPtr(data),
                };
                h = LibvirtNative.virConnectOpenAuth(uri, &auth, readOnly ? LibvirtNative.VIR_CONNECT_RO : 0);
            }
            finally
            {
                data.Free();
            }
        }

        if (h.IsInvalid)
        {
            h.Dispose();
            LibvirtException error = LibvirtLibrary.LastError("virConnectOpen", uri);
            if (error.Code is LibvirtErrorCodes.AuthFailed or LibvirtErrorCodes.AuthUnavailable)
            {
                throw new KvmStorageException(
                    ErrorKind.PermissionDenied,
                    error.ErrorId,
                    $"'{uri}' refused the authentication ({error.LibvirtMessage}). {(userName is null ? "Give a user name and password with -Credential, or use an URI whose transport authenticates you (qemu+ssh)." : $"Check the user name '{userName}' and the password given with -Credential.")}",
                    uri,
                    error);
            }

            // libvirt reports a refused or missing socket under various codes (38, 1, 5): all mean "cannot connect".
            throw new KvmStorageException(
                ErrorKind.ResourceUnavailable,
                LibvirtErrorIds.ConnectFailed,
                $"Cannot connect to '{uri ?? "(default)"}': {error.LibvirtMessage}",
                uri,
                error);
        }

        return new LibvirtConnection(h, uri ?? string.Empty, readOnly);
    }

    /// <summary>libvirt's version (major × 1,000,000 + minor × 1,000 + release).</summary>
    public ulong GetLibraryVersion()
    {
        LibvirtLibrary.Check(LibvirtNative.virConnectGetLibVersion(Handle, out ulong version), "virConnectGetLibVersion", Uri);
        return version;
    }

    /// <summary>The hypervisor's version in the same encoding, or 0 when the driver cannot tell (e.g. no emulator installed).</summary>
    public ulong GetHypervisorVersion()
    {
        if (LibvirtNative.virConnectGetVersion(Handle, out ulong version) < 0)
        {
            LibvirtLibrary.LastError("virConnectGetVersion", Uri);
            return 0;
        }

        return version;
    }

    public string GetHostname() =>
        LibvirtNative.TakeString(LibvirtNative.virConnectGetHostname(Handle)) ?? throw LibvirtLibrary.LastError("virConnectGetHostname", Uri);

    public IReadOnlyList<LibvirtPool> ListPools()
    {
        int count = LibvirtLibrary.Check(LibvirtNative.virConnectListAllStoragePools(Handle, out IntPtr array, 0), "virConnectListAllStoragePools", Uri);
        return TakeArray(array, count, p => new LibvirtPool(new PoolHandle(p), this));
    }

    public LibvirtPool LookupPool(string name) =>
        new(LibvirtLibrary.Check(LibvirtNative.virStoragePoolLookupByName(Handle, name), "virStoragePoolLookupByName", name), this);

    /// <summary>Defines (or redefines) a persistent pool; <paramref name="validate"/> asks libvirt to check the XML against its schema.</summary>
    public LibvirtPool DefinePool(string xml, bool validate, string? target = null) =>
        new(LibvirtLibrary.Check(LibvirtNative.virStoragePoolDefineXML(Handle, xml, validate ? LibvirtNative.VIR_STORAGE_POOL_DEFINE_VALIDATE : 0), "virStoragePoolDefineXML", target), this);

    public LibvirtVolume LookupVolumeByPath(string path) =>
        new(LibvirtLibrary.Check(LibvirtNative.virStorageVolLookupByPath(Handle, path), "virStorageVolLookupByPath", path));

    public IReadOnlyList<LibvirtDomain> ListDomains()
    {
        int count = LibvirtLibrary.Check(LibvirtNative.virConnectListAllDomains(Handle, out IntPtr array, 0), "virConnectListAllDomains", Uri);
        return TakeArray(array, count, p => new LibvirtDomain(new DomainHandle(p)));
    }

    public LibvirtDomain LookupDomain(string name) =>
        new(LibvirtLibrary.Check(LibvirtNative.virDomainLookupByName(Handle, name), "virDomainLookupByName", name));

    /// <summary>Defines (or redefines, same name and UUID) a persistent domain, validated against libvirt's schema.</summary>
    public LibvirtDomain DefineDomain(string xml, bool validate, string? target = null) =>
        new(LibvirtLibrary.Check(LibvirtNative.virDomainDefineXMLFlags(Handle, xml, validate ? LibvirtNative.VIR_DOMAIN_DEFINE_VALIDATE : 0), "virDomainDefineXMLFlags", target));

    public void Dispose() => handle.Dispose();

    public override string ToString() => Uri;

    /// <summary>Wraps each pointer of a libvirt-allocated array (each object now owned by its handle) and frees the array.</summary>
    internal static List<T> TakeArray<T>(IntPtr array, int count, Func<IntPtr, T> wrap)
    {
        var items = new List<T>(count);
        try
        {
            for (int i = 0; i < count; i++)
            {
                items.Add(wrap(Marshal.ReadIntPtr(array, i * IntPtr.Size)));
            }
        }
        finally
        {
            LibvirtNative.free(array);
        }

        return items;
    }

    [UnmanagedCallersOnly]
    private static int AnswerCredentials(LibvirtNative.VirConnectCredential* credentials, uint count, IntPtr data)
    {
        var answers = (CredentialAnswers)GCHandle.FromIntPtr(data).Target!;
        for (uint i = 0; i < count; i++)
        {
            LibvirtNative.VirConnectCredential* credential = &credentials[i];
            string? answer = credential->Type switch
            {
                LibvirtNative.VIR_CRED_USERNAME or LibvirtNative.VIR_CRED_AUTHNAME or LibvirtNative.VIR_CRED_ECHOPROMPT => answers.UserName,
                LibvirtNative.VIR_CRED_PASSPHRASE or LibvirtNative.VIR_CRED_NOECHOPROMPT => answers.Password,
                _ => null,
            };
            if (answer is null)
            {
                return -1;
            }

            // libvirt frees the result with free(): allocate it with malloc (AllocCoTaskMem is malloc on Unix).
            byte[] bytes = Encoding.UTF8.GetBytes(answer);
            IntPtr result = Marshal.AllocCoTaskMem(bytes.Length + 1);
            Marshal.Copy(bytes, 0, result, bytes.Length);
            Marshal.WriteByte(result, bytes.Length, 0);
            credential->Result = result;
            credential->ResultLength = (uint)bytes.Length;
        }

        return 0;
    }

    private sealed record CredentialAnswers(string? UserName, string? Password);
}

/// <summary>Space and state of a pool as <c>virStoragePoolGetInfo</c> reports them.</summary>
public readonly record struct LibvirtPoolInfo(int State, ulong Capacity, ulong Allocation, ulong Available);

/// <summary>A storage pool handle (<c>virStoragePoolPtr</c>).</summary>
public sealed class LibvirtPool : IDisposable
{
    private readonly PoolHandle handle;

    internal LibvirtPool(PoolHandle handle, LibvirtConnection connection)
    {
        this.handle = handle;
        Connection = connection;
        Name = LibvirtNative.PeekString(LibvirtNative.virStoragePoolGetName(handle)) ?? string.Empty;
    }

    public string Name { get; }

    public LibvirtConnection Connection { get; }

    public LibvirtPoolInfo GetInfo()
    {
        LibvirtLibrary.Check(LibvirtNative.virStoragePoolGetInfo(handle, out LibvirtNative.VirStoragePoolInfo info), "virStoragePoolGetInfo", Name);
        return new LibvirtPoolInfo(info.State, info.Capacity, info.Allocation, info.Available);
    }

    public bool IsPersistent => LibvirtLibrary.Check(LibvirtNative.virStoragePoolIsPersistent(handle), "virStoragePoolIsPersistent", Name) == 1;

    public bool Autostart
    {
        get
        {
            LibvirtLibrary.Check(LibvirtNative.virStoragePoolGetAutostart(handle, out int value), "virStoragePoolGetAutostart", Name);
            return value != 0;
        }

        set => LibvirtLibrary.Check(LibvirtNative.virStoragePoolSetAutostart(handle, value ? 1 : 0), "virStoragePoolSetAutostart", Name);
    }

    public string GetXml(bool inactive) =>
        LibvirtNative.TakeString(LibvirtNative.virStoragePoolGetXMLDesc(handle, inactive ? LibvirtNative.VIR_STORAGE_XML_INACTIVE : 0)) ?? throw LibvirtLibrary.LastError("virStoragePoolGetXMLDesc", Name);

    public void Build(uint flags = 0) => LibvirtLibrary.Check(LibvirtNative.virStoragePoolBuild(handle, flags), "virStoragePoolBuild", Name);

    /// <summary>Starts the pool (<c>virStoragePoolCreate</c>).</summary>
    public void Start(uint flags = 0) => LibvirtLibrary.Check(LibvirtNative.virStoragePoolCreate(handle, flags), "virStoragePoolCreate", Name);

    /// <summary>Stops the pool (<c>virStoragePoolDestroy</c>); data is untouched.</summary>
    public void Stop() => LibvirtLibrary.Check(LibvirtNative.virStoragePoolDestroy(handle), "virStoragePoolDestroy", Name);

    /// <summary>Deletes the pool's underlying storage (a dir pool's folder, which must be empty).</summary>
    public void Delete() => LibvirtLibrary.Check(LibvirtNative.virStoragePoolDelete(handle, 0), "virStoragePoolDelete", Name);

    public void Undefine() => LibvirtLibrary.Check(LibvirtNative.virStoragePoolUndefine(handle), "virStoragePoolUndefine", Name);

    public void Refresh() => LibvirtLibrary.Check(LibvirtNative.virStoragePoolRefresh(handle, 0), "virStoragePoolRefresh", Name);

    public IReadOnlyList<LibvirtVolume> ListVolumes()
    {
        int count = LibvirtLibrary.Check(LibvirtNative.virStoragePoolListAllVolumes(handle, out IntPtr array, 0), "virStoragePoolListAllVolumes", Name);
        return LibvirtConnection.TakeArray(array, count, p => new LibvirtVolume(new VolumeHandle(p)));
    }

    public LibvirtVolume LookupVolume(string name) =>
        new(LibvirtLibrary.Check(LibvirtNative.virStorageVolLookupByName(handle, name), "virStorageVolLookupByName", name));

    public LibvirtVolume CreateVolume(string xml, bool validate, string? target = null) =>
        new(LibvirtLibrary.Check(LibvirtNative.virStorageVolCreateXML(handle, xml, validate ? LibvirtNative.VIR_STORAGE_VOL_CREATE_VALIDATE : 0), "virStorageVolCreateXML", target));

    public void Dispose() => handle.Dispose();
}

/// <summary>A storage volume handle (<c>virStorageVolPtr</c>).</summary>
public sealed class LibvirtVolume : IDisposable
{
    private readonly VolumeHandle handle;

    internal LibvirtVolume(VolumeHandle handle)
    {
        this.handle = handle;
        Name = LibvirtNative.PeekString(LibvirtNative.virStorageVolGetName(handle)) ?? string.Empty;
    }

    public string Name { get; }

    public string GetPath() => LibvirtNative.TakeString(LibvirtNative.virStorageVolGetPath(handle)) ?? throw LibvirtLibrary.LastError("virStorageVolGetPath", Name);

    public string GetXml() => LibvirtNative.TakeString(LibvirtNative.virStorageVolGetXMLDesc(handle, 0)) ?? throw LibvirtLibrary.LastError("virStorageVolGetXMLDesc", Name);

    public void Resize(ulong capacity, bool allowShrink) =>
        LibvirtLibrary.Check(LibvirtNative.virStorageVolResize(handle, capacity, allowShrink ? LibvirtNative.VIR_STORAGE_VOL_RESIZE_SHRINK : 0), "virStorageVolResize", Name);

    public void Delete() => LibvirtLibrary.Check(LibvirtNative.virStorageVolDelete(handle, 0), "virStorageVolDelete", Name);

    public void Dispose() => handle.Dispose();
}

/// <summary>Which definition a device change affects (libvirt's <c>VIR_DOMAIN_AFFECT_*</c>).</summary>
[Flags]
public enum DeviceScope
{
    /// <summary>The backend decides: the persistent definition, plus the running VM when it is running.</summary>
    Default = 0,
    Live = 1,
    Config = 2,
}

/// <summary>A domain handle (<c>virDomainPtr</c>).</summary>
public sealed class LibvirtDomain : IDisposable
{
    private readonly DomainHandle handle;

    internal LibvirtDomain(DomainHandle handle)
    {
        this.handle = handle;
        Name = LibvirtNative.PeekString(LibvirtNative.virDomainGetName(handle)) ?? string.Empty;
    }

    public string Name { get; }

    public bool IsActive => LibvirtLibrary.Check(LibvirtNative.virDomainIsActive(handle), "virDomainIsActive", Name) == 1;

    public bool IsPersistent => LibvirtLibrary.Check(LibvirtNative.virDomainIsPersistent(handle), "virDomainIsPersistent", Name) == 1;

    /// <summary>The live XML (running VM) or, with <paramref name="inactive"/>, the persistent one.</summary>
    public string GetXml(bool inactive) =>
        LibvirtNative.TakeString(LibvirtNative.virDomainGetXMLDesc(handle, inactive ? LibvirtNative.VIR_DOMAIN_XML_INACTIVE : 0)) ?? throw LibvirtLibrary.LastError("virDomainGetXMLDesc", Name);

    public void AttachDevice(string xml, DeviceScope scope) =>
        LibvirtLibrary.Check(LibvirtNative.virDomainAttachDeviceFlags(handle, xml, (uint)scope), "virDomainAttachDeviceFlags", Name);

    public void UpdateDevice(string xml, DeviceScope scope) =>
        LibvirtLibrary.Check(LibvirtNative.virDomainUpdateDeviceFlags(handle, xml, (uint)scope), "virDomainUpdateDeviceFlags", Name);

    public void DetachDevice(string xml, DeviceScope scope) =>
        LibvirtLibrary.Check(LibvirtNative.virDomainDetachDeviceFlags(handle, xml, (uint)scope), "virDomainDetachDeviceFlags", Name);

    public void Dispose() => handle.Dispose();
}
