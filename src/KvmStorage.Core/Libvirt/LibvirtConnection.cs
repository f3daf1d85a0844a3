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

    public IReadOnlyList<LibvirtSecret> ListSecrets()
    {
        int count = LibvirtLibrary.Check(LibvirtNative.virConnectListAllSecrets(Handle, out IntPtr array, 0), "virConnectListAllSecrets", Uri);
        return TakeArray(array, count, p => new LibvirtSecret(new SecretHandle(p)));
    }

    public LibvirtSecret DefineSecret(string xml, string? target = null) =>
        new(LibvirtLibrary.Check(LibvirtNative.virSecretDefineXML(Handle, xml, 0), "virSecretDefineXML", target));

    public LibvirtSecret LookupSecret(string uuid) =>
        new(LibvirtLibrary.Check(LibvirtNative.virSecretLookupByUUIDString(Handle, uuid), "virSecretLookupByUUIDString", uuid));

    /// <summary>The secret whose usage is the volume at <paramref name="path"/>; libvirt's NoSecret error when none.</summary>
    public LibvirtSecret LookupVolumeSecret(string path) =>
        new(LibvirtLibrary.Check(LibvirtNative.virSecretLookupByUsage(Handle, LibvirtNative.VIR_SECRET_USAGE_TYPE_VOLUME, path), "virSecretLookupByUsage", path));

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
            IO.NativeMethods.free(array);
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
