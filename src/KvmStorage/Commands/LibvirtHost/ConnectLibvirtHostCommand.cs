using System.Management.Automation;
using System.Net;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Hosting;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.LibvirtHost;

/// <summary>Connect-LibvirtHost: opens a libvirt connection and makes it the session's default host.</summary>
[Cmdlet(VerbsCommunications.Connect, "LibvirtHost")]
[OutputType(typeof(KvmConnection))]
public sealed class ConnectLibvirtHostCommand : KvmCmdlet
{
    /// <summary>The libvirt URI, for example qemu:///system, qemu+ssh://user@host/system or qemu+tcp://host/system.</summary>
    [Parameter(Position = 0, ValueFromPipeline = true)]
    [ValidateNotNullOrEmpty]
    public string Uri { get; set; } = "qemu:///system";

    /// <summary>User name and password for transports that ask for them (SASL over tcp, for example).</summary>
    [Parameter]
    [Credential]
    public PSCredential? Credential { get; set; }

    /// <summary>Open a read-only connection: listing works, changes are refused by libvirt.</summary>
    [Parameter]
    public SwitchParameter ReadOnly { get; set; }

    /// <summary>Open the connection without making it the session's default.</summary>
    [Parameter]
    public SwitchParameter NoDefault { get; set; }

    protected override void ProcessRecord()
    {
        KvmConnection connection;
        try
        {
            NetworkCredential? credential = Credential?.GetNetworkCredential();
            connection = KvmConnection.Open(Uri, ReadOnly, credential?.UserName, credential?.Password);
        }
        catch (KvmStorageException ex)
        {
            ThrowTerminatingError(ErrorRecords.From(ex, Uri));
            return;
        }

        KvmSession.Add(connection, makeDefault: !NoDefault);
        WriteObject(connection);
    }
}
