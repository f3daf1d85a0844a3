using System.Management.Automation;
using KvmStorage.Core.Hosting;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.LibvirtHost;

/// <summary>Get-LibvirtHost: lists the libvirt connections open in this session (the default one first).</summary>
[Cmdlet(VerbsCommon.Get, "LibvirtHost")]
[OutputType(typeof(KvmConnection))]
public sealed class GetLibvirtHostCommand : KvmCmdlet
{
    /// <summary>URIs of the connections to list; wildcards allowed. All when omitted.</summary>
    [Parameter(Position = 0)]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    public string[]? Uri { get; set; }

    /// <summary>Only the session's default connection.</summary>
    [Parameter]
    public SwitchParameter Default { get; set; }

    protected override void EndProcessing()
    {
        IEnumerable<KvmConnection> connections = Default
            ? KvmSession.Default is { } d ? [d] : []
            : KvmSession.Connections.OrderByDescending(KvmSession.IsDefault);
        foreach (KvmConnection connection in connections)
        {
            if (Uri is null || Uri.Any(u => new WildcardPattern(u, WildcardOptions.IgnoreCase).IsMatch(connection.Uri)))
            {
                WriteObject(connection);
            }
        }
    }
}
