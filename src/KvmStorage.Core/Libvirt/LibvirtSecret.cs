namespace KvmStorage.Core.Libvirt;

/// <summary>A secret handle (<c>virSecretPtr</c>): libvirt-secret's define, value, XML and undefine.</summary>
public sealed unsafe class LibvirtSecret : IDisposable
{
    private readonly SecretHandle handle;

    internal LibvirtSecret(SecretHandle handle)
    {
        this.handle = handle;
        byte* buffer = stackalloc byte[37]; // VIR_UUID_STRING_BUFLEN
        LibvirtLibrary.Check(LibvirtNative.virSecretGetUUIDString(handle, buffer), "virSecretGetUUIDString", null);
        Uuid = new string((sbyte*)buffer);
    }

    public string Uuid { get; }

    public string GetXml() => LibvirtNative.TakeString(LibvirtNative.virSecretGetXMLDesc(handle, 0)) ?? throw LibvirtLibrary.LastError("virSecretGetXMLDesc", Uuid);

    /// <summary>Sets the secret's value: the bytes go straight from the caller's buffer to libvirt, never through a string.</summary>
    public void SetValue(ReadOnlySpan<byte> value)
    {
        fixed (byte* p = value)
        {
            LibvirtLibrary.Check(LibvirtNative.virSecretSetValue(handle, p, (nuint)value.Length, 0), "virSecretSetValue", Uuid);
        }
    }

    public void Undefine() => LibvirtLibrary.Check(LibvirtNative.virSecretUndefine(handle), "virSecretUndefine", Uuid);

    public void Dispose() => handle.Dispose();
}
